{{/*
Monitoring: the scrape job's name, shared by the ServiceMonitor/PodMonitor (which set it), the alert rules and the
dashboard (which select on it).
*/}}

{{/*
The job label of the orchestrator's metrics: "<fullname>-orchestrator", whichever monitor scrapes them.
Usage: {{ include "cocalc.metrics.job" . }}
*/}}
{{- define "cocalc.metrics.job" -}}{{ include "cocalc.componentName" (dict "root" . "suffix" "orchestrator") }}{{- end -}}

{{/*
Name of the metrics Service.
Usage: {{ include "cocalc.metrics.serviceName" . }}
*/}}
{{- define "cocalc.metrics.serviceName" -}}{{ include "cocalc.componentName" (dict "root" . "suffix" "metrics") }}{{- end -}}

{{/*
The scrape settings and relabelings of a ServiceMonitor endpoint or PodMonitor podMetricsEndpoint: the
prometheus-operator names the job after the Service or the PodMonitor; the first relabeling names it
cocalc.metrics.job instead, so the alert rules select one job either way.
Usage: {{- include "cocalc.metrics.endpoint" (dict "root" $ "monitor" .Values.metrics.serviceMonitor) | nindent 6 }}
*/}}
{{- define "cocalc.metrics.endpoint" -}}
path: /metrics
scheme: http
interval: {{ .monitor.interval }}
{{- with .monitor.scrapeTimeout }}
scrapeTimeout: {{ . }}
{{- end }}
relabelings:
  - action: replace
    targetLabel: job
    replacement: {{ include "cocalc.metrics.job" .root }}
  {{- with .monitor.relabelings }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with .monitor.metricRelabelings }}
metricRelabelings:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

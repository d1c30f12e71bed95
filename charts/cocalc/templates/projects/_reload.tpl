{{/*
Checksum of the project template fields a running orchestrator cannot reload: podtemplate.RestartFields
(tools/core/podtemplate/reload.go; test/chart TestTemplateRestartFieldsMatchOrchestrator keeps both lists equal).
The server Deployment carries it, so a change of one of them restarts the server, and every other projects.*
change is reloaded by the orchestrator from the mounted ConfigMap without a restart.
Usage: checksum/project-template: {{ include "cocalc.projectTemplate.restartChecksum" . }}
*/}}
{{- define "cocalc.projectTemplate.restartChecksum" -}}
{{- $cm := include (print .Template.BasePath "/projects/configmap-template.yaml") . | fromYaml -}}
{{- $tpl := index $cm.data "template.yaml" | fromYaml -}}
{{- $restart := dict -}}
{{- range $path := list "version" "release" "namespace" "selectorLabels" "security" "storage" "timeouts" "resources.default.idleTimeoutSeconds" -}}
{{- $v := $tpl -}}
{{- range $key := splitList "." $path }}{{ $v = index $v $key }}{{ end -}}
{{- $_ := set $restart $path $v -}}
{{- end -}}
{{- $restart | toJson | sha256sum -}}
{{- end -}}

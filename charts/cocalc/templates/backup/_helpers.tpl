{{/*
Named templates of the scheduled backups (backup.*, docs/backup.md): two CronJobs run files/backup.sh from
the backup image (restic and postgresql-client): "database" (pg_dump streamed into restic) and "homes" (restic
backup of the project homes claim, read-only), into one restic repository on a claim or at a restic URL. For
postgresql.mode embedded the dump comes from the server pod's container db-dump (`cocalc-dbdump serve`, the same
image), through the Service "<fullname>-db-dump".
*/}}

{{/* "<fullname>-backup": the claim, Secret, ConfigMap and NetworkPolicy; the CronJobs add "-database"/"-homes". */}}
{{- define "cocalc.backup.name" -}}{{ include "cocalc.componentName" (dict "root" . "suffix" "backup") }}{{- end -}}

{{/* The Secret whose keys become the backup container's environment (RESTIC_PASSWORD and any store credentials). */}}
{{- define "cocalc.backup.secretName" -}}
{{- default (include "cocalc.backup.name" .) .Values.backup.existingSecret -}}
{{- end -}}

{{/* The claim holding the repository (repository.type claim or existingClaim). */}}
{{- define "cocalc.backup.claimName" -}}
{{- if eq .Values.backup.repository.type "existingClaim" -}}
{{- .Values.backup.repository.existingClaim -}}
{{- else -}}
{{- include "cocalc.backup.name" . -}}
{{- end -}}
{{- end -}}

{{/*
"true" when the server pod runs the dump server (container db-dump, `cocalc-dbdump serve`): the database backup of
postgresql.mode embedded, which listens on the server pod's loopback only.
Usage: {{- if include "cocalc.backup.dumpServer" . }}...{{- end }}
*/}}
{{- define "cocalc.backup.dumpServer" -}}
{{- if and .Values.backup.enabled .Values.backup.database.enabled (eq .Values.postgresql.mode "embedded") -}}true{{- end -}}
{{- end -}}

{{/*
Labels that select the database backup's pods (and no other pod): the backup component plus the CronJob's kind.
Usage:
  matchLabels:
    {{- include "cocalc.backup.databasePodLabels" . | nindent 4 }}
*/}}
{{- define "cocalc.backup.databasePodLabels" -}}
{{ include "cocalc.selectorLabels" (dict "root" . "component" "backup") }}
cocalc-kubernetes/backup: database
{{- end -}}

{{/* The ClusterIP Service of the dump server: "<fullname>-db-dump". */}}
{{- define "cocalc.backup.dumpServiceName" -}}{{ include "cocalc.componentName" (dict "root" . "suffix" "db-dump") }}{{- end -}}

{{/* The dump server's URL as the database CronJob calls it. */}}
{{- define "cocalc.backup.dumpURL" -}}
{{- printf "http://%s.%s.svc:%d/dump" (include "cocalc.backup.dumpServiceName" .) .Release.Namespace (int .Values.backup.database.dumpServer.port) -}}
{{- end -}}

{{/* Where a repository claim is mounted in the backup container. */}}
{{- define "cocalc.backup.claimPath" -}}/repository{{- end -}}

{{/*
Render-time checks of backup.* (values.schema.json cannot express them across keys). Each message names the key.
Usage: {{- include "cocalc.backup.validate" . }}
*/}}
{{- define "cocalc.backup.validate" -}}
{{- $b := .Values.backup -}}
{{- if and (not $b.database.enabled) (not $b.homes.enabled) -}}
{{- fail "backup.database.enabled and backup.homes.enabled: both false, nothing to back up (set backup.enabled: false)" -}}
{{- end -}}
{{- if include "cocalc.backup.dumpServer" . -}}
{{- if and (eq .Values.hub.protocol "smc-compute") (not .Values.hub.embeddedDatabase.activityInSmcCompute) -}}
{{- fail "backup.database.enabled: postgresql.mode embedded is dumped over the server pod's loopback (hub.embeddedDatabase), which a server image listens on only when hub.embeddedDatabase.activityInSmcCompute is true (the chart's server image: tools/images/server); with it false (a plain 2020 image: unix socket only) no dump can connect. Set hub.embeddedDatabase.activityInSmcCompute: true with the chart's server image, or back up the server's data claim instead (docs/backup.md)" -}}
{{- end -}}
{{- $taken := list (int .Values.server.ports.http) (int .Values.server.ports.https) (int .Values.orchestrator.ports.api) (int .Values.orchestrator.ports.health) (int .Values.hub.port) (int .Values.hub.embeddedDatabase.port) -}}
{{- if has (int $b.database.dumpServer.port) $taken -}}
{{- fail "backup.database.dumpServer.port: must differ from the other ports of the server pod (server.ports.http/https, orchestrator.ports, hub.port, hub.embeddedDatabase.port): the containers share one network namespace" -}}
{{- end -}}
{{- if and (not $b.existingSecret) (not $b.database.dumpToken) -}}
{{- fail "backup.database.dumpToken: set it (at least 32 characters, e.g. openssl rand -base64 30), or put the key COCALC_DUMP_TOKEN into backup.existingSecret: postgresql.mode embedded is dumped by the server pod's dump server, which dumps only for the holder of that token; the chart never generates secrets" -}}
{{- end -}}
{{- end -}}
{{- if and (not $b.existingSecret) (not $b.password) -}}
{{- fail "backup.existingSecret: set it (a Secret with the key RESTIC_PASSWORD, plus the object store's credentials) or backup.password; the chart never generates passwords" -}}
{{- end -}}
{{- if and (eq $b.repository.type "existingClaim") (not $b.repository.existingClaim) -}}
{{- fail "backup.repository.existingClaim: required when backup.repository.type is existingClaim" -}}
{{- end -}}
{{- if eq $b.repository.type "url" -}}
{{- if not $b.repository.url -}}
{{- fail "backup.repository.url: required when backup.repository.type is url (e.g. s3:s3.example.org/bucket/cocalc, sftp:user@host:/srv/restic, rest:https://host:8000/cocalc)" -}}
{{- end -}}
{{- if and .Values.networkPolicy.enabled (not $b.networkPolicy.repository.peers) -}}
{{- fail "backup.networkPolicy.repository.peers: required when backup.repository.type is url and networkPolicy.enabled is true: list the object store's addresses (ipBlock CIDRs or in-cluster pods); the backup pods reach nothing else" -}}
{{- end -}}
{{- end -}}
{{- if and $b.database.enabled (eq .Values.postgresql.mode "external") .Values.networkPolicy.enabled (not $b.networkPolicy.database) -}}
{{- fail "backup.networkPolicy.database: required when backup.database.enabled and networkPolicy.enabled are true: list the external PostgreSQL's addresses (ipBlock CIDRs, or a podSelector/namespaceSelector for an in-cluster database); the backup pods reach nothing else" -}}
{{- end -}}
{{- end -}}

{{/*
One backup CronJob. Call with (dict "root" $ "what" "database"|"homes" "schedule" "<cron>").
*/}}
{{- define "cocalc.backup.cronJob" -}}
{{- $root := .root -}}
{{- $b := $root.Values.backup -}}
{{- $sec := $root.Values.projects.security -}}
apiVersion: batch/v1
kind: CronJob
metadata:
  name: {{ printf "%s-%s" (include "cocalc.backup.name" $root | trunc (int (sub 63 (add 1 (len .what)))) | trimSuffix "-") .what }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "cocalc.labels" (dict "root" $root "component" "backup") | nindent 4 }}
spec:
  schedule: {{ .schedule | quote }}
  {{- with $b.timeZone }}
  timeZone: {{ . | quote }}
  {{- end }}
  suspend: {{ $b.suspend }}
  # One run at a time: a run still going when the next is due (a large first backup) is not doubled.
  concurrencyPolicy: Forbid
  startingDeadlineSeconds: 3600
  successfulJobsHistoryLimit: 3
  failedJobsHistoryLimit: 3
  jobTemplate:
    metadata:
      labels:
        {{- include "cocalc.labels" (dict "root" $root "component" "backup") | nindent 8 }}
    spec:
      backoffLimit: {{ $b.backoffLimit }}
      template:
        metadata:
          labels:
            {{- include "cocalc.labels" (dict "root" $root "component" "backup") | nindent 12 }}
            cocalc-kubernetes/backup: {{ .what }}
        spec:
          restartPolicy: Never
          automountServiceAccountToken: false
          enableServiceLinks: false
          {{- with $root.Values.imagePullSecrets }}
          {{- include "cocalc.imagePullSecrets" . | nindent 10 }}
          {{- end }}
          # The project user, like every home's files; fsGroup makes a fresh repository claim writable to it.
          # The homes claim is mounted read-only, so no volume plugin re-owns the homes for it.
          securityContext:
            runAsNonRoot: true
            runAsUser: {{ int64 $sec.runAsUser }}
            runAsGroup: {{ int64 $sec.runAsGroup }}
            fsGroup: {{ int64 $sec.fsGroup }}
            fsGroupChangePolicy: OnRootMismatch
            seccompProfile:
              type: RuntimeDefault
          {{- with $b.nodeSelector }}
          nodeSelector:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with $b.tolerations }}
          tolerations:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- if and (eq .what "homes") (eq $root.Values.storage.mode "nfsServer") }}
          # The NFS server's claim is ReadWriteOnce: mounted on its node only.
          affinity:
            podAffinity:
              requiredDuringSchedulingIgnoredDuringExecution:
                - topologyKey: kubernetes.io/hostname
                  labelSelector:
                    matchLabels:
                      {{- include "cocalc.selectorLabels" (dict "root" $root "component" "nfs") | nindent 22 }}
          {{- end }}
          containers:
            - name: {{ .what }}
              image: {{ include "cocalc.image" (dict "root" $root "image" $b.image) }}
              imagePullPolicy: {{ $b.image.pullPolicy }}
              command: ["bash", "/scripts/backup.sh", {{ .what | quote }}]
              env:
                - name: RESTIC_REPOSITORY
                  value: {{ ternary $b.repository.url (printf "%s/restic" (include "cocalc.backup.claimPath" $root)) (eq $b.repository.type "url") | quote }}
                - name: RESTIC_CACHE_DIR
                  value: /cache
                - name: HOME
                  value: /tmp
                # Snapshots are grouped by it for retention (a Job pod's host name changes every run).
                - name: BACKUP_HOST
                  value: {{ include "cocalc.fullname" $root | quote }}
                - name: KEEP_LAST
                  value: {{ int64 $b.retention.keepLast | quote }}
                - name: KEEP_DAILY
                  value: {{ int64 $b.retention.keepDaily | quote }}
                - name: KEEP_WEEKLY
                  value: {{ int64 $b.retention.keepWeekly | quote }}
                - name: KEEP_MONTHLY
                  value: {{ int64 $b.retention.keepMonthly | quote }}
                {{- if and (eq .what "database") (eq $root.Values.postgresql.mode "embedded") }}
                # The embedded database: the dump server in the server pod runs pg_dump there. COCALC_DUMP_TOKEN
                # comes from the Secret below.
                - name: DUMP_URL
                  value: {{ include "cocalc.backup.dumpURL" $root | quote }}
                # Names the dump in the snapshot (/<database>.dump).
                - name: PGDATABASE
                  value: {{ $root.Values.hub.embeddedDatabase.database | quote }}
                {{- else if eq .what "database" }}
                {{- $pg := $root.Values.postgresql.external }}
                - name: PGHOST
                  value: {{ $pg.host | quote }}
                - name: PGPORT
                  value: {{ int64 $pg.port | quote }}
                - name: PGDATABASE
                  value: {{ $pg.database | quote }}
                - name: PGUSER
                  value: {{ $pg.user | quote }}
                - name: PGCONNECT_TIMEOUT
                  value: "30"
                - name: PGPASSWORD
                  valueFrom:
                    secretKeyRef:
                      name: {{ include "cocalc.postgresSecretName" $root }}
                      key: {{ $pg.existingSecretPasswordKey }}
                {{- else }}
                - name: HOMES_PATH
                  value: {{ include "cocalc.projectsServerPath" $root }}
                {{- end }}
              # RESTIC_PASSWORD, COCALC_DUMP_TOKEN (embedded database) and, for an object store, its credentials
              # (AWS_ACCESS_KEY_ID, ...).
              envFrom:
                - secretRef:
                    name: {{ include "cocalc.backup.secretName" $root }}
              {{- with $b.resources }}
              resources:
                {{- toYaml . | nindent 16 }}
              {{- end }}
              securityContext:
                {{- include "cocalc.restrictedContainerSecurityContext" $root | nindent 16 }}
              volumeMounts:
                - name: scripts
                  mountPath: /scripts
                  readOnly: true
                - name: tmp
                  mountPath: /tmp
                - name: cache
                  mountPath: /cache
                {{- if ne $b.repository.type "url" }}
                - name: repository
                  mountPath: {{ include "cocalc.backup.claimPath" $root }}
                {{- end }}
                {{- if eq .what "homes" }}
                - name: projects-home
                  mountPath: {{ include "cocalc.projectsServerPath" $root }}
                  readOnly: true
                  {{- if and (eq $root.Values.storage.mode "pvc") $root.Values.storage.pvc.subPathPrefix }}
                  subPath: {{ $root.Values.storage.pvc.subPathPrefix | quote }}
                  {{- end }}
                {{- end }}
          volumes:
            - name: scripts
              configMap:
                name: {{ include "cocalc.backup.name" $root }}
                defaultMode: 0444
            - name: tmp
              emptyDir: {}
            # restic's index cache: rebuilt from the repository on each run.
            - name: cache
              emptyDir: {}
            {{- if ne $b.repository.type "url" }}
            - name: repository
              persistentVolumeClaim:
                claimName: {{ include "cocalc.backup.claimName" $root }}
            {{- end }}
            {{- if eq .what "homes" }}
            - name: projects-home
              persistentVolumeClaim:
                claimName: {{ include "cocalc.projectsClaimName" $root }}
                readOnly: true
            {{- end }}
{{- end -}}

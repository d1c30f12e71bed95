{{/*
Shared named templates: names, labels, images and storage facts every component uses.
*/}}

{{/* Chart name, overridable. */}}
{{- define "cocalc.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Prefix of every object name: "<release>-<chart>" unless the release name already contains the chart name. */}}
{{- define "cocalc.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "<fullname>-<suffix>", kept within 63 characters. */}}
{{- /* The fullname is shortened, never the suffix: names of long releases stay distinct ("-server" vs "-server-lb"). */ -}}
{{- define "cocalc.componentName" -}}
{{- $suffix := printf "-%s" .suffix -}}
{{- printf "%s%s" (include "cocalc.fullname" .root | trunc (int (sub 63 (len $suffix))) | trimSuffix "-") $suffix -}}
{{- end -}}

{{- define "cocalc.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Selector labels of a chart component: name, instance and component only (stable across upgrades).
Call with (dict "root" $ "component" "server").
*/}}
{{- define "cocalc.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cocalc.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* All labels of a chart object. Call with (dict "root" $ "component" "server"). */}}
{{- define "cocalc.labels" -}}
{{ include "cocalc.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: cocalc
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ include "cocalc.chart" .root }}
{{- end -}}

{{/*
Annotations of every object that holds data (the server's data claim, the projects claim, the pre-bound
NFS volumes and claims, the backup claim, the projects namespace): nothing but a person deletes them.
- helm.sh/resource-policy: keep: `helm uninstall` leaves the object; ArgoCD honours it only when the
  Application itself is deleted (argo-cd issue #17819), never when a sync prunes.
- argocd.argoproj.io/sync-options: Prune=false,Delete=false: an ArgoCD sync never prunes the object when it
  drops out of the render (a changed existingClaim or storage.mode, projects.createNamespace: false), and
  deleting the Application never deletes it. Such an object stays, reported as needing a prune, until removed
  by hand.
Usage (under metadata.annotations):
  annotations:
    {{- include "cocalc.keepAnnotations" . | nindent 4 }}
*/}}
{{- define "cocalc.keepAnnotations" -}}
helm.sh/resource-policy: keep
argocd.argoproj.io/sync-options: Prune=false,Delete=false
{{- end -}}

{{/*
Selector labels of runtime project pods, exactly as the project pod template declares them.
Never app.kubernetes.io/instance: ArgoCD's label tracking would claim (and prune) runtime pods.
*/}}
{{- define "cocalc.projectSelectorLabels" -}}
app.kubernetes.io/component: project
cocalc-kubernetes/release: {{ .Release.Name }}
{{- end -}}

{{/* Namespace of project pods. */}}
{{- define "cocalc.projectsNamespace" -}}
{{- default .Release.Namespace .Values.projects.namespace -}}
{{- end -}}

{{/* "true" when project pods live in a namespace other than the release's. */}}
{{- define "cocalc.projectsSeparate" -}}
{{- if ne (include "cocalc.projectsNamespace" .) .Release.Namespace -}}true{{- end -}}
{{- end -}}

{{/*
The parts of an image reference, the rule podtemplate.Image.Reference shares: "repository:tag",
"repository@digest" or "repository:tag@digest". Tag "" means the chart's appVersion unless a digest is set
(then the digest alone pins the image). The schema refuses "latest" and digests other than sha256:<64 hex>.
Returns a dict (repository, tag, digest) as YAML; use "cocalc.image" for the string.
Usage: {{ include "cocalc.imageParts" (dict "root" $ "image" .Values.projects.image) | fromYaml }}
*/}}
{{- define "cocalc.imageParts" -}}
{{- $digest := .image.digest | default "" -}}
{{- $tag := .image.tag | default "" -}}
{{- if and (not $tag) (not $digest) -}}{{- $tag = .root.Chart.AppVersion -}}{{- end -}}
{{- dict "repository" .image.repository "tag" $tag "digest" $digest | toYaml -}}
{{- end -}}

{{/*
An image reference (see "cocalc.imageParts").
Usage: image: {{ include "cocalc.image" (dict "root" $ "image" .Values.server.image) }}
*/}}
{{- define "cocalc.image" -}}
{{- $i := include "cocalc.imageParts" . | fromYaml -}}
{{- $i.repository -}}
{{- with $i.tag }}:{{ . }}{{ end -}}
{{- with $i.digest }}@{{ . }}{{ end -}}
{{- end -}}

{{/*
A pod's imagePullSecrets from a non-empty list of Secret names.
Usage:
  {{- with .Values.imagePullSecrets }}
  {{- include "cocalc.imagePullSecrets" . | nindent 6 }}
  {{- end }}
*/}}
{{- define "cocalc.imagePullSecrets" -}}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end -}}

{{/*
The restricted securityContext of a container that needs nothing: no privilege escalation, read-only root
filesystem, every capability dropped (the pod sets runAsNonRoot and seccomp).
Usage:
  securityContext:
    {{- include "cocalc.restrictedContainerSecurityContext" . | nindent 12 }}
*/}}
{{- define "cocalc.restrictedContainerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/*
The ports of the server's Services (ClusterIP and LoadBalancer), to the hub's named container ports.
Usage:
  ports:
    {{- include "cocalc.serverServicePorts" . | nindent 4 }}
*/}}
{{- define "cocalc.serverServicePorts" -}}
- name: http
  port: {{ .Values.service.httpPort }}
  targetPort: http
  protocol: TCP
- name: https
  port: {{ .Values.service.httpsPort }}
  targetPort: https
  protocol: TCP
{{- end -}}

{{- define "cocalc.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "cocalc.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "cocalc.serverName" -}}{{ include "cocalc.componentName" (dict "root" . "suffix" "server") }}{{- end -}}
{{- define "cocalc.nfsName" -}}{{ include "cocalc.componentName" (dict "root" . "suffix" "nfs") }}{{- end -}}
{{- define "cocalc.dataClaimName" -}}
{{- default (include "cocalc.componentName" (dict "root" . "suffix" "data")) .Values.server.persistence.existingClaim -}}
{{- end -}}
{{- define "cocalc.templateConfigMapName" -}}{{ include "cocalc.componentName" (dict "root" . "suffix" "project-template") }}{{- end -}}
{{- define "cocalc.postgresSecretName" -}}
{{- default (include "cocalc.componentName" (dict "root" . "suffix" "postgresql")) .Values.postgresql.external.existingSecret -}}
{{- end -}}

{{/* Claim holding project homes (every mode; in mode nfs one per namespace that mounts the export). */}}
{{- define "cocalc.projectsClaimName" -}}
{{- if and (eq .Values.storage.mode "pvc") .Values.storage.pvc.existingClaim -}}
{{- .Values.storage.pvc.existingClaim -}}
{{- else -}}
{{- include "cocalc.componentName" (dict "root" . "suffix" "projects") -}}
{{- end -}}
{{- end -}}

{{/*
Name of the PersistentVolume (cluster-scoped) pre-bound to a mode-nfs claim: "<claim namespace>.<claim name>".
Namespace names hold no dots, so the first dot splits the name back into the claim's two parts: two claims
never share a volume name, whatever the release names and namespaces (with "-" "a" + "b-c" and "a-b" + "c"
would collide). At most 63 + 1 + 63 characters, a valid DNS subdomain.
Call with (dict "namespace" $ns "claim" $claimName).
*/}}
{{- define "cocalc.nfsVolumeName" -}}
{{- printf "%s.%s" .namespace .claim -}}
{{- end -}}

{{/*
"true" when the chart renders the ValidatingAdmissionPolicy of project pods: admissionPolicy.enabled true, or
"auto" and the cluster serves admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy (Kubernetes >= 1.30).
*/}}
{{- define "cocalc.admissionPolicy.enabled" -}}
{{- $on := .Values.admissionPolicy.enabled -}}
{{- if or (eq (toString $on) "true") (and (eq (toString $on) "auto") (.Capabilities.APIVersions.Has "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy")) -}}true{{- end -}}
{{- end -}}

{{/*
Name of the (cluster-scoped) ValidatingAdmissionPolicy and its binding: "<release namespace>.<fullname>-project-pods",
distinct for releases of one name in different namespaces (namespace names hold no dots).
*/}}
{{- define "cocalc.admissionPolicyName" -}}
{{- printf "%s.%s" .Release.Namespace (include "cocalc.componentName" (dict "root" . "suffix" "project-pods")) -}}
{{- end -}}

{{/*
The Pod Security level the projects namespace enforces: what runtime project pods meet. Only mode nfsServer
mounts NFS inline (the in-cluster server's ClusterIP is known only at runtime), which "restricted" forbids.
*/}}
{{- define "cocalc.projectsPodSecurityLevel" -}}
{{- if eq .Values.storage.mode "nfsServer" -}}baseline{{- else -}}restricted{{- end -}}
{{- end -}}

{{/* Where the server pod sees project homes; the orchestrator creates "<path>/<project_id>" there. */}}
{{- define "cocalc.projectsServerPath" -}}/projects/home{{- end -}}

{{/* The pod volume holding project homes in the server pod. */}}
{{- define "cocalc.projectsVolume" -}}
- name: projects-home
  persistentVolumeClaim:
    claimName: {{ include "cocalc.projectsClaimName" . }}
{{- end -}}

{{/* The mount of project homes in a server container. */}}
{{- define "cocalc.projectsVolumeMount" -}}
- name: projects-home
  mountPath: {{ include "cocalc.projectsServerPath" . }}
{{- if and (eq .Values.storage.mode "pvc") .Values.storage.pvc.subPathPrefix }}
  subPath: {{ .Values.storage.pvc.subPathPrefix | quote }}
{{- end }}
{{- end -}}

{{/*
The hub's own HTTP check (server.healthCheck, port "" resolved by hub.protocol), as YAML:
{port: <container port name>, scheme: HTTP|HTTPS, path, servicePort: <server Service port number>}.
smc-compute: https (the 2020 hub listens on localhost only; haproxy on 443 routes /alive to it);
database: hub (hub.port, the current hub's own server).
Usage: {{- $check := include "cocalc.hubHealthCheck" . | fromYaml }}
*/}}
{{- define "cocalc.hubHealthCheck" -}}
{{- $port := .Values.server.healthCheck.port -}}
{{- if not $port -}}{{- $port = ternary "hub" "https" (eq .Values.hub.protocol "database") -}}{{- end -}}
{{- $servicePort := dict "http" .Values.service.httpPort "https" .Values.service.httpsPort "hub" .Values.hub.port -}}
port: {{ $port }}
scheme: {{ ternary "HTTPS" "HTTP" (eq $port "https") }}
path: {{ .Values.server.healthCheck.path | quote }}
servicePort: {{ get $servicePort $port }}
{{- end -}}

{{/*
One hub probe: the probe's values as given, plus httpGet of "cocalc.hubHealthCheck" unless they name a
handler of their own (httpGet, tcpSocket, exec, grpc).
Usage:
  startupProbe:
    {{- include "cocalc.hubProbe" (dict "root" $ "probe" .Values.server.startupProbe) | nindent 4 }}
*/}}
{{- define "cocalc.hubProbe" -}}
{{- $probe := deepCopy .probe -}}
{{- if not (or $probe.httpGet $probe.tcpSocket $probe.exec $probe.grpc) -}}
{{- $check := include "cocalc.hubHealthCheck" .root | fromYaml -}}
{{- $_ := set $probe "httpGet" (dict "path" $check.path "port" $check.port "scheme" $check.scheme) -}}
{{- end -}}
{{- toYaml $probe -}}
{{- end -}}

{{/*
"true" when the orchestrator gets a hub database (`serve --postgres`): always in database mode; in smc-compute
mode for postgresql.mode external (allowed only with hub.externalPostgresInSmcCompute) or with
hub.embeddedDatabase.activityInSmcCompute.
*/}}
{{- define "cocalc.orchestrator.hasPostgres" -}}
{{- if or (eq .Values.hub.protocol "database") (eq .Values.postgresql.mode "external") .Values.hub.embeddedDatabase.activityInSmcCompute -}}true{{- end -}}
{{- end -}}

{{/*
The orchestrator's `--postgres` connection string (libpq key=value, every value single-quoted with \ and '
escaped), never with a password: PGPASSWORD comes from the Secret as an environment variable. External:
postgresql.external; embedded: hub.embeddedDatabase (loopback; the orchestrator is a sidecar of the hub).
Usage: - {{ printf "--postgres=%s" (include "cocalc.orchestrator.postgresDSN" .) | quote }}
*/}}
{{- define "cocalc.orchestrator.postgresDSN" -}}
{{- $db := .Values.hub.embeddedDatabase -}}
{{- if eq .Values.postgresql.mode "external" -}}{{- $db = .Values.postgresql.external -}}{{- end -}}
{{- $parts := list -}}
{{- range $k, $v := dict "host" $db.host "port" (toString (int $db.port)) "dbname" $db.database "user" $db.user -}}
{{- $parts = append $parts (printf "%s='%s'" $k (toString $v | replace "\\" "\\\\" | replace "'" "\\'")) -}}
{{- end -}}
{{- join " " $parts -}}
{{- end -}}

{{/*
CONAT_SERVER of projects in database mode: the hub port of the server Service, by its name in the release
namespace (projects may run in another one), plus the base path as CoCalc's own default appends it.
*/}}
{{- define "cocalc.conatServer" -}}
{{- printf "http://%s.%s.svc:%d%s" (include "cocalc.serverName" .) .Release.Namespace (int .Values.hub.port) (ternary "" .Values.hub.basePath (eq .Values.hub.basePath "/")) -}}
{{- end -}}

{{/*
Render-time checks for rules values.schema.json cannot express across keys. Each message names the key.
*/}}
{{- define "cocalc.validate" -}}
{{- $sep := include "cocalc.projectsSeparate" . -}}
{{- if and (eq .Values.postgresql.mode "external") (not .Values.postgresql.external.host) -}}
{{- fail "postgresql.external.host: required when postgresql.mode is external" -}}
{{- end -}}
{{- if and (eq .Values.postgresql.mode "external") (not .Values.postgresql.external.existingSecret) (not .Values.postgresql.external.password) -}}
{{- fail "postgresql.external.existingSecret: set it (or postgresql.external.password) when postgresql.mode is external; the chart never generates passwords" -}}
{{- end -}}
{{- if and (eq .Values.postgresql.mode "external") (eq .Values.hub.protocol "smc-compute") (not .Values.hub.externalPostgresInSmcCompute) -}}
{{- fail "postgresql.mode: external does nothing with hub.protocol smc-compute: the 2020 server image's start script sets PGHOST to its embedded database's socket and always starts that database, so the hub would never use the external one. Use hub.protocol database (current CoCalc), or set hub.externalPostgresInSmcCompute: true if your server image honours PGHOST" -}}
{{- end -}}
{{- if and (eq .Values.hub.protocol "database") (has (int .Values.hub.port) (list (int .Values.server.ports.http) (int .Values.server.ports.https) (int .Values.orchestrator.ports.api) (int .Values.orchestrator.ports.health))) -}}
{{- fail "hub.port: must differ from server.ports.http/https and orchestrator.ports in database mode (it is a container port of its own)" -}}
{{- end -}}
{{- if and (eq .Values.hub.protocol "smc-compute") (eq .Values.server.healthCheck.port "hub") -}}
{{- fail "server.healthCheck.port: hub is only a container port in hub.protocol database (the 2020 hub listens on localhost only; use https)" -}}
{{- end -}}
{{- if eq .Values.storage.mode "nfs" -}}
{{- if not .Values.storage.nfs.server -}}
{{- fail "storage.nfs.server: required when storage.mode is nfs" -}}
{{- end -}}
{{- if not (hasPrefix "/" .Values.storage.nfs.path) -}}
{{- fail "storage.nfs.path: an absolute exported path is required when storage.mode is nfs" -}}
{{- end -}}
{{- end -}}
{{- if and (eq .Values.storage.mode "pvc") $sep -}}
{{- fail "storage.mode: pvc needs projects.namespace to be the release namespace (a claim is mounted only by pods of its own namespace); use nfs or nfsServer for a separate projects namespace" -}}
{{- end -}}
{{- if and (eq .Values.storage.mode "nfsServer") $sep -}}
{{- fail "storage.mode: nfsServer needs projects.namespace to be the release namespace (the orchestrator resolves the NFS Service in the projects namespace); use nfs (an external export) for a separate projects namespace" -}}
{{- end -}}
{{- if and .Values.projects.createNamespace (not $sep) -}}
{{- fail "projects.createNamespace: only valid when projects.namespace names a namespace other than the release namespace" -}}
{{- end -}}
{{- if and (or (gt (int .Values.projects.resources.default.gpus) 0) (gt (int .Values.projects.resources.max.gpus) 0)) (not .Values.projects.resources.gpuResourceName) -}}
{{- fail "projects.resources.gpuResourceName: required when projects.resources.default.gpus or max.gpus is above 0" -}}
{{- end -}}
{{- if and (gt (float64 .Values.projects.resources.max.cores) 0.0) (gt (float64 .Values.projects.resources.min.cores) (float64 .Values.projects.resources.max.cores)) -}}
{{- fail "projects.resources.min.cores: exceeds projects.resources.max.cores" -}}
{{- end -}}
{{- if and (gt (int64 .Values.projects.resources.max.memoryMiB) 0) (gt (int64 .Values.projects.resources.min.memoryMiB) (int64 .Values.projects.resources.max.memoryMiB)) -}}
{{- fail "projects.resources.min.memoryMiB: exceeds projects.resources.max.memoryMiB" -}}
{{- end -}}
{{- if and .Values.ingress.enabled (not .Values.ingress.hosts) -}}
{{- fail "ingress.hosts: at least one host is required when ingress.enabled is true" -}}
{{- end -}}
{{- if and (not .Values.serviceAccount.create) (not .Values.serviceAccount.name) -}}
{{- fail "serviceAccount.name: required when serviceAccount.create is false (the orchestrator needs a ServiceAccount bound to its Role)" -}}
{{- end -}}
{{- $r := .Values.projects.resources -}}
{{- if and (not $r.max.network) (or $r.default.network $r.min.network) -}}
{{- fail "projects.resources.default.network and projects.resources.min.network: must be false when projects.resources.max.network is false (max clamps every project to no network, and no internet NetworkPolicy is rendered)" -}}
{{- end -}}
{{- $dns := .Values.projects.dns -}}
{{- if and (not $dns.nameservers) (or $dns.searches $dns.options) -}}
{{- fail "projects.dns.searches and projects.dns.options: only with projects.dns.nameservers (they are the dnsConfig of a resolver you name)" -}}
{{- end -}}
{{- $v6 := .Values.networkPolicy.projects.outside.ipv6 -}}
{{- if and .Values.networkPolicy.enabled $v6.enabled (not $v6.clusterCIDRs) -}}
{{- fail "networkPolicy.projects.outside.ipv6.clusterCIDRs: required when networkPolicy.projects.outside.ipv6.enabled is true: list the cluster's IPv6 pod, service and node ranges, which network=outside projects must not reach (they are often global addresses)" -}}
{{- end -}}
{{- if and .Values.networkPolicy.enabled (eq .Values.storage.mode "nfsServer") -}}
{{- if not .Values.networkPolicy.nfs.nodeCIDRs -}}
{{- fail "networkPolicy.nfs.nodeCIDRs: required when storage.mode is nfsServer and networkPolicy.enabled is true: kubelets mount project homes from node IPs, so give your node CIDRs (e.g. --set networkPolicy.nfs.nodeCIDRs='{10.128.0.0/20}'); nothing else may reach the NFS server" -}}
{{- end -}}
{{- range .Values.networkPolicy.nfs.nodeCIDRs -}}
{{- if hasSuffix "/0" . -}}
{{- fail (printf "networkPolicy.nfs.nodeCIDRs: %s would let every address mount every project home (pods of other namespaces too, on CNIs where ipBlock matches pod IPs); give your node CIDRs" .) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

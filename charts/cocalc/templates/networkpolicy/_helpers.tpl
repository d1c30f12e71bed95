{{/*
Named egress/ingress rule builders for the NetworkPolicies (the z2jh pattern: one helper per rule family).
*/}}

{{/*
DNS on 53 UDP/TCP. For the server (projects false): one rule per enabled destination family of
.Values.networkPolicy.dns. For projects (projects true) the same, unless projects.dns.nameservers names the
projects' own resolver: then exactly those IPs, so a project cannot bypass its dnsConfig and query (or tunnel
data through) the cluster resolver directly.
Call with (dict "root" $ "projects" true).
*/}}
{{- define "cocalc.networkPolicy.dnsEgressRules" -}}
{{- $root := .root -}}
{{- $dns := $root.Values.networkPolicy.dns -}}
{{- $own := and .projects $root.Values.projects.dns.nameservers -}}
{{- if $own }}
# DNS: the projects' own resolver (projects.dns.nameservers) only.
{{- include "cocalc.networkPolicy.dnsHostsRule" $root.Values.projects.dns.nameservers }}
{{- else }}
{{- if $dns.kubeSystem }}
# DNS: CoreDNS/kube-dns pods in kube-system.
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: kube-system
  ports:
    {{- include "cocalc.networkPolicy.dnsPorts" . | nindent 4 }}
{{- end }}
{{- if $dns.privateIPs }}
# DNS: any private IP (for CNIs that see DNS traffic after DNAT to a node or host-network resolver).
- to:
    {{- range include "cocalc.networkPolicy.rfc1918CIDRs" . | fromYamlArray }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    {{- include "cocalc.networkPolicy.dnsPorts" . | nindent 4 }}
{{- end }}
{{- with $dns.nodeLocalIPs }}
# DNS: node-local DNS caches.
{{- include "cocalc.networkPolicy.dnsHostsRule" . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* One DNS egress rule to a list of single IPs (/32 or /128). Call with the list of IPs. */}}
{{- define "cocalc.networkPolicy.dnsHostsRule" }}
- to:
    {{- range . }}
    - ipBlock:
        cidr: {{ printf "%s/%s" . (ternary "128" "32" (contains ":" .)) }}
    {{- end }}
  ports:
    {{- include "cocalc.networkPolicy.dnsPorts" . | nindent 4 }}
{{- end -}}

{{- define "cocalc.networkPolicy.dnsPorts" -}}
- protocol: UDP
  port: 53
- protocol: TCP
  port: 53
{{- end -}}

{{/*
Internet egress for projects with network=outside: everything except private, shared (CGNAT), link-local
(cloud metadata servers 169.254.169.254 and GKE's 169.254.169.252) and loopback ranges, plus admin-listed CIDRs.
IPv6 only when networkPolicy.projects.outside.ipv6.enabled: on IPv6 and dual-stack clusters pods, services and
nodes often have global addresses, so the admin must list them (ipv6.clusterCIDRs, required); unique-local,
link-local, loopback and both NAT64 prefixes (64:ff9b::/96, and the local-use 64:ff9b:1::/48, either of which can
reach private IPv4) are always excluded. IPv4-mapped addresses (::ffff:0:0/96) are not listed: the API server
rejects them in ipBlock, and a socket to one sends IPv4 packets, which the IPv4 rule already judges.
*/}}
{{- define "cocalc.networkPolicy.internetEgressRules" -}}
{{- $outside := .Values.networkPolicy.projects.outside -}}
{{- $v4 := concat (include "cocalc.networkPolicy.rfc1918CIDRs" . | fromYamlArray) (list "100.64.0.0/10" "169.254.0.0/16" "127.0.0.0/8") -}}
{{- $v6 := list "fc00::/7" "fe80::/10" "::1/128" "64:ff9b::/96" "64:ff9b:1::/48" -}}
{{- $v6 = concat $v6 $outside.ipv6.clusterCIDRs -}}
{{- range $outside.exceptCIDRs -}}
{{- if contains ":" . -}}{{- $v6 = append $v6 . -}}{{- else -}}{{- $v4 = append $v4 . -}}{{- end -}}
{{- end -}}
- to:
    - ipBlock:
        cidr: 0.0.0.0/0
        except:
          {{- toYaml $v4 | nindent 10 }}
    {{- if $outside.ipv6.enabled }}
    - ipBlock:
        cidr: ::/0
        except:
          {{- toYaml ($v6 | uniq) | nindent 10 }}
    {{- end }}
{{- end -}}

{{/*
The private IPv4 ranges of RFC 1918, as a YAML list (DNS to private IPs, and what internet egress excludes).
Usage: {{ range include "cocalc.networkPolicy.rfc1918CIDRs" . | fromYamlArray }}...{{ end }}
*/}}
{{- define "cocalc.networkPolicy.rfc1918CIDRs" -}}
["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
{{- end -}}

{{/*
Peer of runtime project pods (in the projects namespace when it is separate), for the server's policy.
Usage:
  - to:
      {{- include "cocalc.networkPolicy.projectsPeer" . | nindent 6 }}
*/}}
{{- define "cocalc.networkPolicy.projectsPeer" -}}
- podSelector:
    matchLabels:
      {{- include "cocalc.projectSelectorLabels" . | nindent 6 }}
  {{- if include "cocalc.projectsSeparate" . }}
  namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ include "cocalc.projectsNamespace" . }}
  {{- end }}
{{- end -}}

{{/*
The peer "the server pod" as seen from the projects namespace.
Usage:
  - from:
      {{- include "cocalc.networkPolicy.serverPeer" . | nindent 6 }}
*/}}
{{- define "cocalc.networkPolicy.serverPeer" -}}
- podSelector:
    matchLabels:
      {{- include "cocalc.selectorLabels" (dict "root" . "component" "server") | nindent 6 }}
  {{- if include "cocalc.projectsSeparate" . }}
  namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ .Release.Namespace }}
  {{- end }}
{{- end -}}


{{/*
Database mode (hub.protocol database) only: current CoCalc projects connect to the hub's conat server
(CONAT_SERVER, the hub port of the server Service); a policy sees the connection after the Service's
translation, so the rule names the server pod and the container port hub.port. Nothing in smc-compute mode:
the 2020 hub connects to its projects, never the other way.
Usage:
  egress:
    {{- with include "cocalc.networkPolicy.hubEgressRules" . | trim }}
    {{- . | nindent 4 }}
    {{- end }}
*/}}
{{- define "cocalc.networkPolicy.hubEgressRules" -}}
{{- if eq .Values.hub.protocol "database" }}
# The hub's conat server (CONAT_SERVER), nothing else of the server pod.
- to:
    {{- include "cocalc.networkPolicy.serverPeer" . | nindent 4 }}
  ports:
    - protocol: TCP
      port: {{ .Values.hub.port }}
{{- end }}
{{- end -}}

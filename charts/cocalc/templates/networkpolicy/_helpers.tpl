{{/*
Named egress/ingress rule builders for the NetworkPolicies (the z2jh pattern: one helper per rule family).
*/}}

{{/* DNS on 53 UDP/TCP, one rule per enabled destination family of .Values.networkPolicy.dns. */}}
{{- define "cocalc.networkPolicy.dnsEgressRules" -}}
{{- $dns := .Values.networkPolicy.dns -}}
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
    - ipBlock:
        cidr: 10.0.0.0/8
    - ipBlock:
        cidr: 172.16.0.0/12
    - ipBlock:
        cidr: 192.168.0.0/16
  ports:
    {{- include "cocalc.networkPolicy.dnsPorts" . | nindent 4 }}
{{- end }}
{{- with $dns.nodeLocalIPs }}
# DNS: node-local DNS caches.
- to:
    {{- range . }}
    - ipBlock:
        cidr: {{ printf "%s/%s" . (ternary "128" "32" (contains ":" .)) }}
    {{- end }}
  ports:
    {{- include "cocalc.networkPolicy.dnsPorts" . | nindent 4 }}
{{- end }}
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
IPv6 excludes unique-local, link-local, loopback and the NAT64 prefix that could reach private IPv4. IPv4-mapped
addresses (::ffff:0:0/96) are not listed: the API server rejects them in ipBlock, and a socket to one sends IPv4
packets, which the IPv4 rule already judges.
*/}}
{{- define "cocalc.networkPolicy.internetEgressRules" -}}
{{- $v4 := list "10.0.0.0/8" "172.16.0.0/12" "192.168.0.0/16" "100.64.0.0/10" "169.254.0.0/16" "127.0.0.0/8" -}}
{{- $v6 := list "fc00::/7" "fe80::/10" "::1/128" "64:ff9b::/96" -}}
{{- range .Values.networkPolicy.projects.outside.exceptCIDRs -}}
{{- if contains ":" . -}}{{- $v6 = append $v6 . -}}{{- else -}}{{- $v4 = append $v4 . -}}{{- end -}}
{{- end -}}
- to:
    - ipBlock:
        cidr: 0.0.0.0/0
        except:
          {{- toYaml $v4 | nindent 10 }}
    - ipBlock:
        cidr: ::/0
        except:
          {{- toYaml $v6 | nindent 10 }}
{{- end -}}

{{/* The peer "the server pod" as seen from the projects namespace. */}}
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

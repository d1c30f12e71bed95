package chart

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
)

// ganeshaBlock is one block of an NFS-Ganesha configuration file: its
// parameters (names lower-cased: ganesha ignores their case) and sub-blocks.
type ganeshaBlock struct {
	name   string
	params map[string]string
	blocks []*ganeshaBlock
}

// parseGanesha reads ganesha's block syntax (`NAME { key = value; SUB { … } }`,
// `#` comments) into a root block holding the top-level blocks. Usage:
// parseGanesha(t, conf).one(t, "EXPORT").params["squash"].
func parseGanesha(t *testing.T, conf string) *ganeshaBlock {
	t.Helper()
	var text strings.Builder
	for _, line := range strings.Split(conf, "\n") {
		line, _, _ = strings.Cut(line, "#")
		text.WriteString(line + "\n")
	}
	root := &ganeshaBlock{params: map[string]string{}}
	stack := []*ganeshaBlock{root}
	rest := text.String()
	for {
		i := strings.IndexAny(rest, "{}=;")
		if i < 0 {
			require.Empty(t, strings.TrimSpace(rest), "trailing text")
			break
		}
		word := strings.TrimSpace(rest[:i])
		cur := stack[len(stack)-1]
		switch rest[i] {
		case '{':
			require.NotEmpty(t, word, "block without a name near %q", rest[:i+1])
			b := &ganeshaBlock{name: strings.ToUpper(word), params: map[string]string{}}
			cur.blocks = append(cur.blocks, b)
			stack = append(stack, b)
			rest = rest[i+1:]
		case '}':
			require.Empty(t, word, "parameter without '=' before '}'")
			require.Greater(t, len(stack), 1, "unbalanced '}'")
			stack = stack[:len(stack)-1]
			rest = rest[i+1:]
		case '=':
			end := strings.IndexByte(rest[i:], ';')
			require.GreaterOrEqual(t, end, 0, "parameter %s has no ';'", word)
			key := strings.ToLower(word)
			require.NotContains(t, cur.params, key, "%s set twice in %s", word, cur.name)
			cur.params[key] = strings.TrimSpace(rest[i+1 : i+end])
			rest = rest[i+end+1:]
		case ';':
			require.Empty(t, word, "stray ';'")
			rest = rest[i+1:]
		}
	}
	require.Len(t, stack, 1, "unclosed block")
	return root
}

// all returns the sub-blocks called name.
func (b *ganeshaBlock) all(name string) []*ganeshaBlock {
	var res []*ganeshaBlock
	for _, c := range b.blocks {
		if c.name == name {
			res = append(res, c)
		}
	}
	return res
}

// one returns the single sub-block called name.
func (b *ganeshaBlock) one(t *testing.T, name string) *ganeshaBlock {
	t.Helper()
	found := b.all(name)
	require.Len(t, found, 1, "want exactly one %s block in %s", name, b.name)
	return found[0]
}

// walk calls f on b and every block below it.
func (b *ganeshaBlock) walk(f func(*ganeshaBlock)) {
	f(b)
	for _, c := range b.blocks {
		c.walk(f)
	}
}

func TestParseGanesha(t *testing.T) {
	root := parseGanesha(t, "# c\nA { x = 1; # y = 2;\n B { Clients = 10.0.0.0/8, fd00::/64; } }\nC{}")
	a := root.one(t, "A")
	assert.Equal(t, map[string]string{"x": "1"}, a.params)
	assert.Equal(t, "10.0.0.0/8, fd00::/64", a.one(t, "B").params["clients"])
	assert.Len(t, root.all("C"), 1)
}

// The ganesha.conf the chart renders for the in-cluster NFS server: NFSv4
// over TCP only, one export of the projects claim as the pseudo root, no
// access except the listed client networks, every caller squashed to the
// project uid/gid. test/nfsserver runs ganesha on this file.
func TestNFSServerExports(t *testing.T) {
	for _, c := range []struct {
		name        string
		set         map[string]string
		wantClients string
		uid, gid    string
	}{
		{
			name:        "node-cidrs",
			set:         map[string]string{"networkPolicy.nfs.nodeCIDRs": "{10.0.0.0/16,fd00:1::/64}"},
			wantClients: "10.0.0.0/16, fd00:1::/64",
			uid:         "2001", gid: "2001",
		},
		{
			name: "extra-clients-own-ids",
			set: map[string]string{
				"networkPolicy.nfs.nodeCIDRs":        "{10.0.0.0/16}",
				"storage.nfsServer.extraClientCIDRs": "{10.244.0.0/16,10.0.0.0/16}",
				"projects.security.runAsUser":        "3005",
				"projects.security.runAsGroup":       "3006",
			},
			wantClients: "10.0.0.0/16, 10.244.0.0/16",
			uid:         "3005", gid: "3006",
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			m := mustDecode(t, render(t, nil, c.set))
			cm := one[*corev1.ConfigMap](t, m, releaseName+"-nfs")
			conf := parseGanesha(t, cm.Data["ganesha.conf"])

			core := conf.one(t, "NFS_CORE_PARAM")
			assert.Equal(t, map[string]string{
				"protocols": "4", "nfs_port": "2049", "enable_nlm": "false", "enable_rquota": "false", "enable_udp": "false",
			}, core.params, "NFSv4 over TCP on 2049, no other service")
			assert.Equal(t, "false", conf.one(t, "NFS_KRB5").params["active_krb5"])

			export := conf.one(t, "EXPORT")
			assert.Equal(t, `"/exports"`, export.params["path"])
			assert.Equal(t, `"/"`, export.params["pseudo"], "the export is the pseudo root: project pods mount /<id>")
			assert.Equal(t, "4", export.params["protocols"])
			assert.Equal(t, "TCP", export.params["transports"])
			assert.Equal(t, "None", export.params["access_type"], "no access unless a CLIENT block matches")
			assert.Equal(t, "All_Squash", export.params["squash"])
			assert.Equal(t, c.uid, export.params["anonymous_uid"])
			assert.Equal(t, c.gid, export.params["anonymous_gid"])
			assert.Equal(t, "VFS", export.one(t, "FSAL").params["name"])

			client := export.one(t, "CLIENT")
			assert.Equal(t, c.wantClients, client.params["clients"])
			assert.Equal(t, "RW", client.params["access_type"])
			assert.Equal(t, "4", client.params["protocols"])
			conf.walk(func(b *ganeshaBlock) {
				if s, ok := b.params["squash"]; ok {
					assert.Equal(t, "all_squash", strings.ToLower(s), "%s squashes less than all", b.name)
				}
				for _, k := range []string{"anonymous_uid", "anonymous_gid", "access_type"} {
					if b != export && b != client {
						assert.NotContains(t, b.params, k, "%s in %s", k, b.name)
					}
				}
			})
			lower := strings.ToLower(cm.Data["ganesha.conf"])
			for _, word := range []string{"no_root_squash", "noidsquash", "insecure"} {
				assert.NotContains(t, lower, word)
			}

			sts := one[*appsv1.StatefulSet](t, m, releaseName+"-nfs")
			ctr := container(t, sts.Spec.Template.Spec, "nfs")
			assert.True(t, strings.HasPrefix(ctr.Image, "registry.gitlab.com/resurgo/cocalc-kubernetes/nfs-server:"), ctr.Image)
			assert.Empty(t, ctr.Env)
			assert.Equal(t, &corev1.SecurityContext{
				Privileged:               ptr.To(false),
				AllowPrivilegeEscalation: ptr.To(false),
				ReadOnlyRootFilesystem:   ptr.To(true),
				RunAsUser:                ptr.To[int64](0),
				RunAsGroup:               ptr.To[int64](0),
				Capabilities: &corev1.Capabilities{
					Drop: []corev1.Capability{"ALL"},
					Add:  []corev1.Capability{"DAC_READ_SEARCH", "SETUID", "SETGID", "FOWNER"},
				},
			}, ctr.SecurityContext, "exactly the capabilities test/nfsserver shows ganesha needs")
			require.NotNil(t, sts.Spec.Template.Spec.SecurityContext)
			assert.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, sts.Spec.Template.Spec.SecurityContext.SeccompProfile.Type)

			require.Len(t, ctr.Ports, 1)
			assert.Equal(t, corev1.ContainerPort{Name: "nfs", ContainerPort: 2049, Protocol: corev1.ProtocolTCP}, ctr.Ports[0])
			for _, p := range []*corev1.Probe{ctr.ReadinessProbe, ctr.LivenessProbe} {
				require.NotNil(t, p)
				require.NotNil(t, p.TCPSocket)
				assert.Equal(t, "nfs", p.TCPSocket.Port.String())
			}

			mounts := map[string]corev1.VolumeMount{}
			for _, vm := range ctr.VolumeMounts {
				mounts[vm.MountPath] = vm
			}
			volumes := map[string]corev1.Volume{}
			for _, v := range sts.Spec.Template.Spec.Volumes {
				volumes[v.Name] = v
			}
			projects := volumes[mounts["/exports"].Name]
			require.NotNil(t, projects.PersistentVolumeClaim, "the export path holds the projects claim")
			assert.Equal(t, releaseName+"-projects", projects.PersistentVolumeClaim.ClaimName)
			config := volumes[mounts["/etc/ganesha"].Name]
			require.NotNil(t, config.ConfigMap, "/etc/ganesha holds the ConfigMap")
			assert.Equal(t, cm.Name, config.ConfigMap.Name)
			assert.True(t, mounts["/etc/ganesha"].ReadOnly)
			for _, writable := range []string{"/run", "/var/lib/nfs/ganesha"} {
				require.Contains(t, mounts, writable)
				assert.NotNil(t, volumes[mounts[writable].Name].EmptyDir, writable)
			}
		})
	}
}

// A change of the exports restarts the NFS server pod.
func TestNFSServerRestartsOnConfigChange(t *testing.T) {
	checksum := func(cidrs string) string {
		m := mustDecode(t, render(t, nil, map[string]string{"networkPolicy.nfs.nodeCIDRs": cidrs}))
		sum := one[*appsv1.StatefulSet](t, m, releaseName+"-nfs").Spec.Template.Annotations["checksum/config"]
		require.NotEmpty(t, sum)
		return sum
	}
	assert.NotEqual(t, checksum("{10.0.0.0/16}"), checksum("{10.1.0.0/16}"))
}

package cluster

import (
	"context"
	"crypto/tls"
	_ "embed"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// kwokStages are the Stage documents kwok plays: node readiness and
// heartbeat, the pod lifecycle with short delays, completion of Job pods
// and of bare restartPolicy: Never pods (helm test hooks).
//
//go:embed stages.yaml
var kwokStages []byte

// Fixed addresses of the simulated cluster. The Service range matches
// kind's default, so values files work on both tiers.
const (
	serviceCIDR = "10.96.0.0/16"
	podCIDR     = "10.244.0.0/16"
	clusterName = "cocalc-test"
)

// apiTier is a running api-tier control plane.
type apiTier struct {
	dir       string
	removeDir bool
	logf      func(string, ...any)

	mu    sync.Mutex
	procs []*process

	// lifecycle serialises restartAPIServer with stop, so a restart never
	// launches an API server after (or while) the tier is torn down.
	lifecycle sync.Mutex
	stopped   bool
	bin       string
	// apiArgs are kube-apiserver's flags, kept so a restart runs it with
	// exactly the same port, certificates and etcd.
	apiArgs []string

	cancelProvisioner context.CancelFunc
	provisionerDone   chan struct{}
}

// KubeBinary resolves the control-plane binary: explicit, $COCALC_KUBE_BIN,
// or <repo>/bin/kube-cluster.
func KubeBinary(explicit string) (string, error) {
	if explicit == "" {
		explicit = os.Getenv(EnvKubeBin)
	}
	if explicit == "" {
		root, err := RepoRoot()
		if err != nil {
			return "", err
		}
		explicit = filepath.Join(root, "bin", "kube-cluster")
	}
	if _, err := os.Stat(explicit); err != nil {
		return "", fmt.Errorf("control-plane binary %s missing: build it with `make kube-bin` (%w)", explicit, err)
	}
	return explicit, nil
}

// freePorts reserves n distinct loopback ports. They are released just
// before the processes bind them; a collision with another process in
// that window makes the start fail loudly, not silently share a port.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("reserve a loopback port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// childEnv is the environment of control-plane processes: the test's,
// minus variables the components would read as their own settings (etcd
// reads every ETCD_* variable) or that point at another cluster.
func childEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "ETCD_") || name == "KUBECONFIG" {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// startAPI starts the api tier, or attaches to a running one if
// COCALC_TEST_REUSE is set and one is recorded.
func startAPI(ctx context.Context, opts Options) (*Cluster, error) {
	bin, err := KubeBinary(opts.KubeBinary)
	if err != nil {
		return nil, err
	}
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	// Ports are picked free but released before the components bind
	// them; another process may take one in between. Such a start fails
	// fast ("address already in use") and is retried on new ports.
	var lastErr error
	for attempt := 1; attempt <= 3; attempt++ {
		c, err := startAPIOnce(ctx, opts, bin)
		if err == nil {
			return c, nil
		}
		lastErr = err
		if !strings.Contains(err.Error(), "address already in use") || ctx.Err() != nil {
			break
		}
		opts.Logf("api tier: port taken during start (attempt %d), retrying on new ports", attempt)
	}
	return nil, lastErr
}

func startAPIOnce(ctx context.Context, opts Options, bin string) (*Cluster, error) {
	var err error
	t := &apiTier{dir: opts.StateDir, logf: opts.Logf}
	if t.dir == "" {
		if t.dir, err = os.MkdirTemp("", "cocalc-api-"); err != nil {
			return nil, fmt.Errorf("state dir: %w", err)
		}
		t.removeDir = true
	} else {
		// A reused state dir starts from scratch: stale etcd data would
		// carry the previous cluster's objects and certificates.
		if err := os.RemoveAll(t.dir); err != nil {
			return nil, fmt.Errorf("clear state dir: %w", err)
		}
	}
	c, err := t.start(ctx, bin, opts.Nodes)
	if err != nil {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_ = t.stop(stopCtx)
		return nil, err
	}
	return c, nil
}

func (t *apiTier) path(elem ...string) string {
	return filepath.Join(append([]string{t.dir}, elem...)...)
}

func (t *apiTier) launch(name, bin string, args ...string) (*process, error) {
	p, err := startProcess(name, t.path("logs", name+".log"), bin, append([]string{name}, args...), childEnv())
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	t.procs = append(t.procs, p)
	t.mu.Unlock()
	return p, nil
}

// anyDied returns an error naming the first control-plane process that exited.
func (t *apiTier) anyDied() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, p := range t.procs {
		if done, err := p.exited(); done {
			return fmt.Errorf("%s exited (%v); last log lines:\n%s", p.name, err, tail(t.path("logs", p.name+".log"), 2000))
		}
	}
	return nil
}

func (t *apiTier) start(ctx context.Context, bin string, nodes int) (*Cluster, error) {
	begin := time.Now()
	t.bin = bin
	for _, d := range []string{"pki", "logs", "etcd", "certs", "volumes"} {
		if err := os.MkdirAll(t.path(d), 0o700); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
	}
	keys, err := newPKI()
	if err != nil {
		return nil, err
	}
	if err := keys.write(t.path("pki")); err != nil {
		return nil, err
	}
	ports, err := freePorts(6)
	if err != nil {
		return nil, err
	}
	etcdPort, peerPort, apiPort, cmPort, schedPort, kwokPort := ports[0], ports[1], ports[2], ports[3], ports[4], ports[5]
	server := "https://127.0.0.1:" + strconv.Itoa(apiPort)
	kubeconfigs := map[string]*keyPair{
		"admin": keys.Admin, "controller-manager": keys.ControllerMgr, "scheduler": keys.Scheduler, "kwok": keys.Kwok,
	}
	for name, user := range kubeconfigs {
		if err := writeKubeconfig(t.path(name+".kubeconfig"), server, keys.CA.CertPEM, user); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(t.path("stages.yaml"), kwokStages, 0o600); err != nil {
		return nil, fmt.Errorf("write kwok stages: %w", err)
	}
	if err := os.WriteFile(t.path(auditPolicyFile), auditPolicy, 0o600); err != nil {
		return nil, fmt.Errorf("write audit policy: %w", err)
	}

	etcdURL := "http://127.0.0.1:" + strconv.Itoa(etcdPort)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	if _, err := t.launch("etcd", bin,
		"--name=default",
		"--data-dir="+t.path("etcd"),
		"--listen-client-urls="+etcdURL,
		"--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL,
		"--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=default="+peerURL,
		// Test data is disposable: skipping fsync makes etcd (and so every
		// API write) fast on slow disks.
		"--unsafe-no-fsync=true",
		"--log-level=warn",
	); err != nil {
		return nil, err
	}
	if err := waitFor(ctx, 100*time.Millisecond, httpOK(etcdURL+"/health", nil), t.anyDied); err != nil {
		return nil, fmt.Errorf("etcd not healthy: %w", err)
	}

	pki := t.path("pki")
	t.apiArgs = []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(apiPort),
		"--cert-dir=" + t.path("certs"),
		"--tls-cert-file=" + filepath.Join(pki, "apiserver.crt"),
		"--tls-private-key-file=" + filepath.Join(pki, "apiserver.key"),
		"--client-ca-file=" + filepath.Join(pki, "ca.crt"),
		"--kubelet-client-certificate=" + filepath.Join(pki, "apiserver-kubelet.crt"),
		"--kubelet-client-key=" + filepath.Join(pki, "apiserver-kubelet.key"),
		"--requestheader-client-ca-file=" + filepath.Join(pki, "front-proxy-ca.crt"),
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + filepath.Join(pki, "front-proxy-client.crt"),
		"--proxy-client-key-file=" + filepath.Join(pki, "front-proxy-client.key"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + filepath.Join(pki, "sa.pub"),
		"--service-account-signing-key-file=" + filepath.Join(pki, "sa.key"),
		"--service-cluster-ip-range=" + serviceCIDR,
		"--authorization-mode=Node,RBAC",
		// PodSecurity is in the default plugin set; listed so the intent
		// survives a change of defaults.
		"--enable-admission-plugins=NodeRestriction,PodSecurity",
		"--allow-privileged=true",
		// On loopback the endpoint reconciler refuses 127.0.0.1; the
		// kubernetes Service then has no endpoints, which no test needs.
		"--endpoint-reconciler-type=none",
		"--profiling=false",
		// On SIGTERM, answer new requests with 429 + Retry-After (clients
		// retry) until in-flight ones drain, then give open watches 2 s
		// instead of the request timeout (60 s): without it every stop
		// and RestartAPIServer waited out the SIGKILL grace period.
		"--shutdown-send-retry-after=true",
		// What service accounts do, one JSON line per request (see
		// Cluster.AuditEvents): the RBAC tests derive the Role from it.
		"--audit-policy-file=" + t.path(auditPolicyFile),
		"--audit-log-path=" + t.path(AuditLogFile),
		"--audit-log-format=json",
		"--audit-log-mode=blocking",
		"--audit-log-maxsize=512",
	}
	if _, err := t.launch(apiServerName, bin, t.apiArgs...); err != nil {
		return nil, err
	}
	c, err := waitForAPI(ctx, t.path("admin.kubeconfig"), t.anyDied)
	if err != nil {
		return nil, fmt.Errorf("kube-apiserver not ready: %w", err)
	}
	t.logf("api tier: kube-apiserver ready at %s after %s", server, time.Since(begin).Round(time.Millisecond))

	common := func(name string, port int) []string {
		kc := t.path(name + ".kubeconfig")
		return []string{
			"--kubeconfig=" + kc,
			"--authentication-kubeconfig=" + kc,
			"--authorization-kubeconfig=" + kc,
			"--bind-address=127.0.0.1",
			"--secure-port=" + strconv.Itoa(port),
			"--cert-dir=" + t.path("certs", name),
			"--leader-elect=false",
		}
	}
	if _, err := t.launch("kube-controller-manager", bin, append(common("controller-manager", cmPort),
		"--service-account-private-key-file="+filepath.Join(pki, "sa.key"),
		"--root-ca-file="+filepath.Join(pki, "ca.crt"),
		"--cluster-signing-cert-file="+filepath.Join(pki, "ca.crt"),
		"--cluster-signing-key-file="+filepath.Join(pki, "ca.key"),
		"--use-service-account-credentials=true",
		"--service-cluster-ip-range="+serviceCIDR,
		"--cluster-name="+clusterName,
	)...); err != nil {
		return nil, err
	}
	if _, err := t.launch("kube-scheduler", bin, common("scheduler", schedPort)...); err != nil {
		return nil, err
	}
	if _, err := t.launch("kwok", bin,
		"--kubeconfig="+t.path("kwok.kubeconfig"),
		"--config="+t.path("stages.yaml"),
		"--manage-all-nodes=false",
		"--manage-nodes-with-annotation-selector="+kwokNodeAnnotation+"=fake",
		"--server-address=127.0.0.1:"+strconv.Itoa(kwokPort),
		"--cidr="+podCIDR,
		"--node-lease-duration-seconds=40",
	); err != nil {
		return nil, err
	}

	if err := createStorageClass(ctx, c.Client); err != nil {
		return nil, err
	}
	if err := createFakeNodes(ctx, c.Client, nodes); err != nil {
		return nil, err
	}
	provCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	t.cancelProvisioner = cancel
	t.provisionerDone = make(chan struct{})
	go func() {
		defer close(t.provisionerDone)
		runProvisioner(provCtx, c.Client, t.path("volumes"), t.logf)
	}()

	insecure := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		// The components serve self-signed certificates from --cert-dir;
		// this only asks loopback health endpoints whether they are up.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec
	}}
	for name, port := range map[string]int{"kube-controller-manager": cmPort, "kube-scheduler": schedPort} {
		url := "https://127.0.0.1:" + strconv.Itoa(port) + "/healthz"
		if err := waitFor(ctx, 200*time.Millisecond, httpOK(url, insecure), t.anyDied); err != nil {
			return nil, fmt.Errorf("%s not healthy: %w", name, err)
		}
	}
	if err := waitFor(ctx, 200*time.Millisecond, nodesReady(c.Client, nodes), t.anyDied); err != nil {
		return nil, fmt.Errorf("simulated nodes not Ready: %w", err)
	}
	// Pods in a namespace can only be created once its default
	// ServiceAccount exists (made by the controller-manager).
	if err := waitFor(ctx, 200*time.Millisecond, defaultServiceAccount(c.Client), t.anyDied); err != nil {
		return nil, fmt.Errorf("default ServiceAccount never appeared: %w", err)
	}
	t.logf("api tier: ready with %d nodes after %s (state %s)", nodes, time.Since(begin).Round(time.Millisecond), t.dir)

	c.Tier = TierAPI
	c.Name = t.dir
	c.StateDir = t.dir
	c.caps = capsOf(TierAPI)
	c.owned = true
	c.stop = t.stop
	c.pids = t.pids
	c.restartAPI = t.restartAPIServer
	return c, nil
}

func (t *apiTier) pids() []int {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]int, 0, len(t.procs))
	for _, p := range t.procs {
		out = append(out, p.Pid())
	}
	return out
}

// stop ends the provisioner and every process, newest first (kwok and the
// controllers before the API server before etcd).
func (t *apiTier) stop(ctx context.Context) error {
	t.lifecycle.Lock()
	defer t.lifecycle.Unlock()
	t.stopped = true
	if t.cancelProvisioner != nil {
		t.cancelProvisioner()
		<-t.provisionerDone
	}
	t.mu.Lock()
	procs := append([]*process(nil), t.procs...)
	t.procs = nil
	t.mu.Unlock()
	var errs []error
	for i := len(procs) - 1; i >= 0; i-- {
		if err := procs[i].stop(stopGrace(ctx)); err != nil {
			errs = append(errs, err)
		}
	}
	if t.removeDir {
		if err := os.RemoveAll(t.dir); err != nil {
			errs = append(errs, fmt.Errorf("remove state dir: %w", err))
		}
	}
	return errors.Join(errs...)
}

// stopGrace is how long a process gets between SIGTERM and SIGKILL: 10 s,
// or what is left of ctx.
func stopGrace(ctx context.Context) time.Duration {
	grace := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < grace {
		grace = max(time.Until(dl), 0)
	}
	return grace
}

// httpOK checks that url answers 200.
func httpOK(url string, client *http.Client) func(context.Context) error {
	if client == nil {
		client = &http.Client{Timeout: 2 * time.Second}
	}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", url, resp.Status)
		}
		return nil
	}
}

// waitForAPI waits until the API server behind kubeconfig reports ready.
func waitForAPI(ctx context.Context, kubeconfig string, abort func() error) (*Cluster, error) {
	var c *Cluster
	err := waitFor(ctx, 100*time.Millisecond, func(ctx context.Context) error {
		reqCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		got, err := connect(reqCtx, TierAPI, kubeconfig, kubeconfig)
		if err != nil {
			return err
		}
		c = got
		return nil
	}, abort)
	return c, err
}

func defaultServiceAccount(client kubernetesClient) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := client.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{})
		return err
	}
}

func nodesReady(client kubernetesClient, want int) func(context.Context) error {
	return func(ctx context.Context) error {
		nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		// Usable means Ready and untainted: the node lifecycle controller
		// removes node.kubernetes.io/not-ready a moment after Ready turns
		// true, and pods without tolerations cannot schedule until then.
		ready := 0
		for _, n := range nodes.Items {
			if len(n.Spec.Taints) > 0 {
				continue
			}
			for _, c := range n.Status.Conditions {
				if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
					ready++
				}
			}
		}
		if ready < want {
			return fmt.Errorf("%d of %d nodes Ready and untainted", ready, want)
		}
		return nil
	}
}

// ignoreExists treats AlreadyExists as success (idempotent setup).
func ignoreExists(err error) error {
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

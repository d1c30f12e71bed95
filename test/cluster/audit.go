package cluster

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// AuditLogFile is the api tier's audit log, relative to Cluster.StateDir:
// one JSON event per request made by a service account (auditPolicy).
const AuditLogFile = "logs/audit.log"

const auditPolicyFile = "audit-policy.yaml"

// auditPolicy records, at Metadata level (who, what, which object, the
// answer; never bodies), every request of every service account, once
// per request (when the response is complete; a watch also when it
// starts). Everything else (the control plane, helm, tests) is not logged.
var auditPolicy = []byte(`apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
  - level: None
`)

// AuditEvent is the part of an audit.k8s.io/v1 Event the tests read.
type AuditEvent struct {
	Stage      string `json:"stage"`
	Verb       string `json:"verb"`
	RequestURI string `json:"requestURI"`
	User       struct {
		Username string `json:"username"`
	} `json:"user"`
	ObjectRef *struct {
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
		APIGroup    string `json:"apiGroup"`
		Namespace   string `json:"namespace"`
		Name        string `json:"name"`
	} `json:"objectRef"`
	ResponseStatus *struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
}

// ErrNoAuditLog: the tier keeps no audit log (only the api tier does).
var ErrNoAuditLog = errors.New("this tier keeps no audit log")

// AuditEvents returns the audit events of requests by username (e.g.
// "system:serviceaccount:ns:name"), in log order.
func (c *Cluster) AuditEvents(username string) ([]AuditEvent, error) {
	if c.Tier != TierAPI || c.StateDir == "" {
		return nil, fmt.Errorf("%s tier: %w", c.Tier, ErrNoAuditLog)
	}
	path := filepath.Join(c.StateDir, AuditLogFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s (a cluster started before audit logging? restart it): %w", path, ErrNoAuditLog)
	}
	if err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	lines := bytes.Split(data, []byte("\n"))
	// The last element is empty, or a line still being written.
	lines = lines[:len(lines)-1]
	var out []AuditEvent
	for i, line := range lines {
		var ev AuditEvent
		if err := json.Unmarshal(line, &ev); err != nil {
			return nil, fmt.Errorf("audit log %s line %d: %w", path, i+1, err)
		}
		if ev.User.Username == username {
			out = append(out, ev)
		}
	}
	return out, nil
}

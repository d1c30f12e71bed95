package cluster

import "context"

// attachKind connects to the kind cluster `make cluster-kind` created.
func attachKind(ctx context.Context, _ Options) (*Cluster, error) {
	return Attach(ctx, TierKind)
}

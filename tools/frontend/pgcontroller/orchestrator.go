package pgcontroller

import (
	"context"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/projectfiles"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/hubcontrol/orchestrated"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
)

// RunWithOrchestrator runs the controller next to an in-process
// orchestrator (`cocalc-k8s serve --postgres ...`). Unset configuration is
// taken from the project pod template: the homes root and owner
// (storage.serverPath, security.runAsUser/runAsGroup) and the home inside
// project pods (storage.mountPath).
func RunWithOrchestrator(ctx context.Context, cfg Config, o *orchestrator.Orchestrator, tpl *podtemplate.Template) error {
	if cfg.Files.Dir == "" {
		cfg.Files = projectfiles.Store{Dir: tpl.Storage.ServerPath, UID: int(tpl.Security.RunAsUser), GID: int(tpl.Security.RunAsGroup)}
	}
	if cfg.ProjectHome == "" {
		cfg.ProjectHome = tpl.Storage.MountPath
	}
	return Run(ctx, cfg, orchestrated.Adapter{Core: orchestrated.Local(o)})
}

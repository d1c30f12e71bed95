package pgcontroller

import (
	"context"
	"time"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/projectfiles"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
)

// RunWithOrchestrator runs the controller next to an in-process
// orchestrator (`cocalc-k8s serve --postgres ...`). Unset configuration is
// taken from the project pod template: the homes root and owner
// (storage.serverPath, security.runAsUser/runAsGroup) and the home inside
// project pods (storage.mountPath), the start and stop deadlines
// (timeouts.startSeconds, stopSeconds) and the default idle timeout
// (resources.default.idleTimeoutSeconds).
func RunWithOrchestrator(ctx context.Context, cfg Config, o *orchestrator.Orchestrator, tpl *podtemplate.Template) error {
	return Run(ctx, withTemplate(cfg, tpl), o)
}

// templateMargin lets the orchestrator's own start/stop deadline (same
// template value) fire first, with its detailed reason.
const templateMargin = 15 * time.Second

// withTemplate fills the configuration the template knows and cfg leaves
// unset, so raising projects.timeouts.startSeconds in the chart also
// lengthens database-driven starts.
func withTemplate(cfg Config, tpl *podtemplate.Template) Config {
	if cfg.Files.Dir == "" {
		cfg.Files = projectfiles.Store{Dir: tpl.Storage.ServerPath, UID: int(tpl.Security.RunAsUser), GID: int(tpl.Security.RunAsGroup)}
	}
	if cfg.ProjectHome == "" {
		cfg.ProjectHome = tpl.Storage.MountPath
	}
	if cfg.StartTimeout <= 0 && tpl.Timeouts.StartSeconds > 0 {
		cfg.StartTimeout = time.Duration(tpl.Timeouts.StartSeconds)*time.Second + templateMargin
	}
	if cfg.StopTimeout <= 0 && tpl.Timeouts.StopSeconds > 0 {
		cfg.StopTimeout = time.Duration(tpl.Timeouts.StopSeconds)*time.Second + templateMargin
	}
	if cfg.DefaultIdleTimeout <= 0 && tpl.Resources.Default.IdleTimeoutSeconds > 0 {
		cfg.DefaultIdleTimeout = time.Duration(tpl.Resources.Default.IdleTimeoutSeconds) * time.Second
	}
	if cfg.Resources == nil {
		cfg.Resources = &tpl.Resources
	}
	return cfg
}

package main

import (
	"fmt"
	"os"

	"github.com/spf13/pflag"
	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format, as upstream mains
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics, as upstream mains
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric, as upstream mains
	"k8s.io/component-base/version"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kwokconfig "sigs.k8s.io/kwok/pkg/config"
	kwokcmd "sigs.k8s.io/kwok/pkg/kwok/cmd"
	kwoklog "sigs.k8s.io/kwok/pkg/log"
	"sigs.k8s.io/kwok/pkg/utils/signals"
)

// The Kubernetes commands parse os.Args themselves through cobra, so each
// runner rewrites os.Args to look like the upstream binary was invoked.
func withArgs(name string, args []string) {
	os.Args = append([]string{name}, args...)
}

func runAPIServer(args []string) int {
	withArgs("kube-apiserver", args)
	return cli.Run(apiserver.NewAPIServerCommand())
}

func runControllerManager(args []string) int {
	withArgs("kube-controller-manager", args)
	return cli.Run(controllermanager.NewControllerManagerCommand())
}

func runScheduler(args []string) int {
	withArgs("kube-scheduler", args)
	return cli.Run(scheduler.NewSchedulerCommand())
}

func runEtcd(args []string) int {
	withArgs("etcd", args)
	etcdmain.Main(os.Args)
	return 0
}

// runKwok mirrors sigs.k8s.io/kwok/cmd/kwok. component-base registers
// --version on pflag.CommandLine at init; kwok's own --version (a bool)
// then clashes with it ("trying to get bool value of flag of type
// version"), so kwok gets a fresh global flag set.
func runKwok(args []string) int {
	withArgs("kwok", args)
	pflag.CommandLine = pflag.NewFlagSet("kwok", pflag.ExitOnError)

	flagset := pflag.NewFlagSet("global", pflag.ContinueOnError)
	flagset.ParseErrorsAllowlist.UnknownFlags = true
	flagset.Usage = func() {}

	ctx := signals.SetupSignalContext()
	ctx, logger := kwoklog.InitFlags(ctx, flagset)
	ctx, err := kwokconfig.InitFlags(ctx, flagset)
	if err != nil {
		_, _ = os.Stderr.Write([]byte(flagset.FlagUsages()))
		logger.Error("Init config flags", "err", err)
		return 1
	}
	command := kwokcmd.NewCommand(ctx)
	command.PersistentFlags().AddFlagSet(flagset)
	command.SetArgs(args)
	if err := command.ExecuteContext(ctx); err != nil {
		logger.Error("Execute exit", "err", err)
		return 1
	}
	return 0
}

// runVersion prints the Kubernetes version stamped in by the build's
// ldflags, so scripts can check a cached binary is the expected one.
func runVersion([]string) int {
	fmt.Println(version.Get().GitVersion)
	return 0
}

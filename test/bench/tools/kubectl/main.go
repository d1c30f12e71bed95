// Command kubectl is upstream kubectl (k8s.io/kubectl at the version pinned
// in this module's go.mod), built so the benchmark's re-creation of the
// original system's method runs a kubectl of a known version instead of
// whatever the machine has on its PATH. It mirrors
// k8s.io/kubernetes/cmd/kubectl without needing the kubernetes module and
// its staging replaces.
package main

import (
	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
)

func main() {
	command := cmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		util.CheckErr(err)
	}
}

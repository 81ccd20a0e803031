// Command kubectl is kubectl itself (k8s.io/kubectl, as cmd/kubectl in
// kubernetes/kubernetes builds it), built from the Go module proxy by
// make test for the gateway's tests: they run the real client against the
// gateway. It is a module of its own, so the gateway's build does not
// depend on it.
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

// Command pause is the sandbox ("pause") container of the local node's pods: it holds the pod's
// namespaces open until the kubelet stops the sandbox, like registry.k8s.io/pause, but built here
// from source (tools/kadence_devstack/images.py) so the node needs no registry.
//
// It waits for SIGINT or SIGTERM and exits 0. As PID 1 of a pod that shares its process
// namespace (shareProcessNamespace: true) it also reaps orphaned children, which is why it
// listens for SIGCHLD; otherwise zombies would pile up in the pod.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "-v" || os.Args[1] == "--version") {
		fmt.Println("pause (kadence)")
		return
	}
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig == syscall.SIGCHLD {
			reap()
			continue
		}
		fmt.Fprintf(os.Stderr, "Shutting down, got signal: %v\n", sig)
		os.Exit(0)
	}
}

// reap collects every exited child without blocking (several exits can share one SIGCHLD).
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}

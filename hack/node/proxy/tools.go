//go:build tools

// Package proxy pins kube-proxy (k8s.io/kubernetes/cmd/kube-proxy) for hack/node/build.sh.
package proxy

import (
	_ "k8s.io/kubernetes/cmd/kube-proxy"
)

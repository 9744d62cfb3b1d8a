// Wrapper module for kfcache's test control plane (scripts/k8s.sh build): kwok, which fakes the
// GPU nodes (node stages only). Its own module: next to Argo, version selection breaks
// k8s.io/cri-client.
module kfcache.local/k8s/kwok

go 1.26.0

require sigs.k8s.io/kwok v0.7.0

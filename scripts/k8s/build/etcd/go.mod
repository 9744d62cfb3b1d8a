// Wrapper module for kfcache's test control plane (scripts/k8s.sh build): etcd from the Go
// module proxy.
module kfcache.local/k8s/etcd

go 1.26.0

require go.etcd.io/etcd/server/v3 v3.6.16

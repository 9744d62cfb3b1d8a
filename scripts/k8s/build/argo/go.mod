// Wrapper module for kfcache's test control plane (scripts/k8s.sh build): Argo's argoexec (from
// ./argoexec) and workflow-controller (built by package path,
// github.com/argoproj/argo-workflows/v3/cmd/workflow-controller). The replace copies the one in
// argo-workflows' own go.mod. Kept apart from kwok: together, version selection breaks
// k8s.io/cri-client. At build time scripts/k8s.sh adds
// `replace github.com/argoproj/argo-workflows/v3 => ./argo-workflows`, a copy of the module with
// the one file its zip lacks (argo_patched_copy in scripts/k8s.sh).
module kfcache.local/k8s/argo

go 1.26.0

require github.com/argoproj/argo-workflows/v3 v3.7.4

replace github.com/olekukonko/tablewriter => github.com/olekukonko/tablewriter v0.0.5

// etcd, as upstream's go.etcd.io/etcd/server/v3 main.go (v3.6.16).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}

// A minio-go client (the S3 client of Argo's executor) for the gateway's tests: each command
// is one operation against the endpoint, with the behaviour Argo's `init` and `wait` have:
// no region set (so minio-go asks `GET /BUCKET?location` first), path-style over plain HTTP
// (so uploads use aws-chunked streaming signatures, and multipart above 16 MiB).
//
//	minio-client ENDPOINT BUCKET get KEY FILE          FGetObject (StatObject, then GET)
//	minio-client ENDPOINT BUCKET range KEY OFFSET LEN FILE
//	minio-client ENDPOINT BUCKET put KEY FILE          FPutObject
//	minio-client ENDPOINT BUCKET list PREFIX           ListObjects (V2), one key per line
//	minio-client ENDPOINT BUCKET location              GetBucketLocation
//	minio-client ENDPOINT BUCKET stat KEY              StatObject: "SIZE ETAG"
//	minio-client ENDPOINT BUCKET remove KEY            RemoveObject
//
// Credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) < 3 {
		return fmt.Errorf("usage: minio-client ENDPOINT BUCKET COMMAND ARGS...")
	}
	endpoint, bucket, command, rest := args[0], args[1], args[2], args[3:]
	client, err := minio.New(endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY"), ""),
		Secure: false,
	})
	if err != nil {
		return err
	}
	ctx := context.Background()
	need := func(n int) error {
		if len(rest) != n {
			return fmt.Errorf("%s needs %d arguments", command, n)
		}
		return nil
	}
	switch command {
	case "get":
		if err := need(2); err != nil {
			return err
		}
		return client.FGetObject(ctx, bucket, rest[0], rest[1], minio.GetObjectOptions{})
	case "range":
		if err := need(4); err != nil {
			return err
		}
		offset, err := strconv.ParseInt(rest[1], 10, 64)
		if err != nil {
			return err
		}
		length, err := strconv.ParseInt(rest[2], 10, 64)
		if err != nil {
			return err
		}
		opts := minio.GetObjectOptions{}
		if err := opts.SetRange(offset, offset+length-1); err != nil {
			return err
		}
		object, err := client.GetObject(ctx, bucket, rest[0], opts)
		if err != nil {
			return err
		}
		defer object.Close()
		out, err := os.Create(rest[3])
		if err != nil {
			return err
		}
		defer out.Close()
		_, err = io.Copy(out, object)
		return err
	case "put":
		if err := need(2); err != nil {
			return err
		}
		_, err := client.FPutObject(ctx, bucket, rest[0], rest[1], minio.PutObjectOptions{})
		return err
	case "list":
		if err := need(1); err != nil {
			return err
		}
		for object := range client.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: rest[0], Recursive: true}) {
			if object.Err != nil {
				return object.Err
			}
			fmt.Println(object.Key)
		}
		return nil
	case "location":
		location, err := client.GetBucketLocation(ctx, bucket)
		if err != nil {
			return err
		}
		fmt.Println(location)
		return nil
	case "stat":
		if err := need(1); err != nil {
			return err
		}
		info, err := client.StatObject(ctx, bucket, rest[0], minio.StatObjectOptions{})
		if err != nil {
			return err
		}
		fmt.Println(info.Size, info.ETag)
		return nil
	case "remove":
		if err := need(1); err != nil {
			return err
		}
		return client.RemoveObject(ctx, bucket, rest[0], minio.RemoveObjectOptions{})
	}
	return fmt.Errorf("unknown command %q", command)
}

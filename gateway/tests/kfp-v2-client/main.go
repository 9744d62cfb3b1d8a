// The object-store calls of Kubeflow Pipelines v2's launcher, against an S3 endpoint: the
// launcher opens the pipeline root's bucket with gocloud.dev's s3blob over aws-sdk-go-v2
// (a client with static keys, a base endpoint and path-style addressing, as its `kfp-launcher`
// ConfigMap's S3 provider settings give), lists an input artifact's prefix and reads each
// object under it into the local path `main` sees; outputs are written with the bucket's
// writer. This program makes the same calls; KFP's own module is not served by the Go module
// proxy, so it cannot be imported here.
//
//	kfp-v2-client download ENDPOINT BUCKET PREFIX LOCAL_DIR
//	kfp-v2-client upload ENDPOINT BUCKET KEY LOCAL_FILE
//
// Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. On success it prints one
// line per object: the key and its byte count.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"gocloud.dev/blob"
	"gocloud.dev/blob/s3blob"
)

func open(ctx context.Context, endpoint, bucket string) (*blob.Bucket, error) {
	config := aws.Config{
		Region: "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider(
			os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY"), ""),
	}
	client := s3.NewFromConfig(config, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(endpoint)
		o.UsePathStyle = true
	})
	return s3blob.OpenBucketV2(ctx, client, bucket, nil)
}

// download lists prefix and copies every object under it into dir, keeping the path below
// the prefix; an object whose key is the prefix itself is a single-file artifact.
func download(ctx context.Context, bucket *blob.Bucket, prefix, dir string) error {
	iter := bucket.List(&blob.ListOptions{Prefix: prefix})
	base := strings.TrimSuffix(prefix, "/")
	for {
		object, err := iter.Next(ctx)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("list %q: %w", prefix, err)
		}
		if object.IsDir {
			continue
		}
		key := strings.TrimSuffix(object.Key, "/")
		local := dir
		if key != base {
			relative, err := filepath.Rel(base, key)
			if err != nil || strings.HasPrefix(relative, "..") {
				return fmt.Errorf("unexpected key %q under %q", object.Key, prefix)
			}
			local = filepath.Join(dir, relative)
		}
		if err := copyOut(ctx, bucket, object.Key, local); err != nil {
			return err
		}
	}
}

func copyOut(ctx context.Context, bucket *blob.Bucket, key, local string) error {
	reader, err := bucket.NewReader(ctx, key, nil)
	if err != nil {
		return fmt.Errorf("read %q: %w", key, err)
	}
	defer reader.Close()
	if err := os.MkdirAll(filepath.Dir(local), 0o755); err != nil {
		return err
	}
	file, err := os.Create(local)
	if err != nil {
		return err
	}
	n, err := io.Copy(file, reader)
	if closeErr := file.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		return fmt.Errorf("copy %q: %w", key, err)
	}
	fmt.Printf("%s %d\n", key, n)
	return nil
}

func upload(ctx context.Context, bucket *blob.Bucket, key, local string) error {
	file, err := os.Open(local)
	if err != nil {
		return err
	}
	defer file.Close()
	writer, err := bucket.NewWriter(ctx, key, nil)
	if err != nil {
		return fmt.Errorf("write %q: %w", key, err)
	}
	n, err := io.Copy(writer, file)
	if closeErr := writer.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		return fmt.Errorf("write %q: %w", key, err)
	}
	fmt.Printf("%s %d\n", key, n)
	return nil
}

func main() {
	if len(os.Args) != 6 || (os.Args[1] != "download" && os.Args[1] != "upload") {
		fmt.Fprintln(os.Stderr, "usage: kfp-v2-client download|upload ENDPOINT BUCKET PREFIX|KEY LOCAL")
		os.Exit(2)
	}
	ctx := context.Background()
	bucket, err := open(ctx, os.Args[2], os.Args[3])
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
	defer bucket.Close()
	if os.Args[1] == "download" {
		err = download(ctx, bucket, os.Args[4], os.Args[5])
	} else {
		err = upload(ctx, bucket, os.Args[4], os.Args[5])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

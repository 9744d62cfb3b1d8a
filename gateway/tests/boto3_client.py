"""boto3 against the kfcache S3 gateway, as user code and KFP components use it.

    python boto3_client.py ENDPOINT BUCKET STAGED_KEY OUT_PREFIX SMALL_FILE BIG_FILE

Reads STAGED_KEY whole and by range, heads it, uploads SMALL_FILE (one PUT, with boto3's default
CRC32 checksum) and BIG_FILE (multipart), lists OUT_PREFIX,
asks the bucket's location and deletes the small upload. Prints one JSON object.
Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
"""

import hashlib
import json
import sys

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config


def main() -> None:
    endpoint, bucket, staged, prefix, small, big = sys.argv[1:7]
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    full = s3.get_object(Bucket=bucket, Key=staged)
    body = full["Body"].read()
    ranged = s3.get_object(Bucket=bucket, Key=staged, Range="bytes=1000-2000999")["Body"].read()
    head = s3.head_object(Bucket=bucket, Key=staged)
    with open(small, "rb") as f:
        s3.put_object(Bucket=bucket, Key=f"{prefix}small.txt", Body=f)
    s3.upload_file(
        big,
        bucket,
        f"{prefix}big.bin",
        Config=TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20),
    )
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    location = s3.get_bucket_location(Bucket=bucket)
    s3.delete_object(Bucket=bucket, Key=f"{prefix}small.txt")
    print(
        json.dumps(
            {
                "full_sha256": hashlib.sha256(body).hexdigest(),
                "full_len": len(body),
                "etag": full["ETag"],
                "range_sha256": hashlib.sha256(ranged).hexdigest(),
                "range_len": len(ranged),
                "head_len": head["ContentLength"],
                "listed": sorted(o["Key"] for o in listed.get("Contents", [])),
                "location": location.get("LocationConstraint"),
            }
        )
    )


if __name__ == "__main__":
    main()

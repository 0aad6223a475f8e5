#!/usr/bin/env python3
"""A straightforward Python client of the service-stac upload API, as publishers write them:
read the file, hashlib, requests, one PUT per part in sequence. The benchmark runs it against
the same emulator as stac-uploadd to measure the ratio in one run.

usage: python_client.py BASE_URL COLLECTION ITEM ASSET FILE [PART_SIZE]
prints: {"digest_s": ..., "send_s": ..., "total_s": ...}
"""
import base64
import hashlib
import json
import os
import sys
import time

import requests


def main():
    base, collection, item, asset, path = sys.argv[1:6]
    part_size = int(sys.argv[6]) if len(sys.argv) > 6 else 100 * 1024 * 1024
    url = f"{base}/collections/{collection}/items/{item}/assets/{asset}"
    size = os.path.getsize(path)
    count = max(1, -(-size // part_size))
    if count > 100:  # the API takes at most 100 parts: grow them to whole MiB
        mib = 1024 * 1024
        per_part = -(-size // 100)  # ceiling division
        part_size = -(-per_part // mib) * mib
        count = -(-size // part_size)
    start = time.monotonic()
    sha = hashlib.sha256()
    md5s = []
    with open(path, "rb") as f:
        for _ in range(count):
            data = f.read(part_size)
            sha.update(data)
            md5s.append(base64.b64encode(hashlib.md5(data).digest()).decode())
    digest_s = time.monotonic() - start
    body = {
        "number_parts": count,
        "md5_parts": [{"part_number": i + 1, "md5": m} for i, m in enumerate(md5s)],
        "file:checksum": "1220" + sha.hexdigest(),
    }
    session = requests.Session()
    session.trust_env = False
    r = session.post(f"{url}/uploads", json=body)
    r.raise_for_status()
    upload = r.json()
    send_start = time.monotonic()
    parts = []
    with open(path, "rb") as f:
        for part in sorted(upload["urls"], key=lambda u: u["part"]):
            data = f.read(part_size)
            r = session.put(part["url"], data=data, headers={"Content-MD5": md5s[part["part"] - 1]})
            r.raise_for_status()
            parts.append({"etag": r.headers["ETag"], "part_number": part["part"]})
    r = session.post(f"{url}/uploads/{upload['upload_id']}/complete", json={"parts": parts})
    r.raise_for_status()
    end = time.monotonic()
    print(json.dumps({"digest_s": digest_s, "send_s": end - send_start, "total_s": end - start}))


if __name__ == "__main__":
    main()

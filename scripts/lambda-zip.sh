#!/usr/bin/env bash
# Build the AWS Lambda package: target/lambda/jotgate.zip holding `bootstrap` (the jotgate
# binary, `--profile dist`: fat LTO, stripped) for the provided.al2023 runtime on x86_64.
# The same zip serves the API function and the authorizer (JOTGATE_LAMBDA_MODE).
#
#   scripts/lambda-zip.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --profile dist --locked -p jotgate
mkdir -p target/lambda
cp target/dist/jotgate target/lambda/bootstrap
python3 - <<'PY'
import os, zipfile
info = zipfile.ZipInfo("bootstrap", date_time=(2026, 1, 1, 0, 0, 0))
info.external_attr = 0o100755 << 16          # a regular, executable file
info.compress_type = zipfile.ZIP_DEFLATED
with open("target/lambda/bootstrap", "rb") as f, zipfile.ZipFile("target/lambda/jotgate.zip", "w") as z:
    z.writestr(info, f.read(), compresslevel=9)
print(f"target/lambda/jotgate.zip: {os.path.getsize('target/lambda/jotgate.zip') / 2**20:.1f} MiB "
      f"(bootstrap {os.path.getsize('target/lambda/bootstrap') / 2**20:.1f} MiB)")
PY
# provided.al2023 has glibc 2.34: the binary must not need a newer one.
need=$(objdump -T target/lambda/bootstrap | grep -o 'GLIBC_[0-9.]*' | sort -V | tail -1)
echo "newest glibc symbol needed: $need (provided.al2023 has GLIBC_2.34)"

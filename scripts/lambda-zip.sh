#!/usr/bin/env bash
# Build the AWS Lambda package: target/lambda/jotgate.zip holding `bootstrap` (the jotgate
# binary, `--profile lambda`: the dist profile — fat LTO, stripped, panic=abort — optimised
# for size) for the provided.al2023 runtime on x86_64. The same zip serves the API function
# and the authorizer (JOTGATE_LAMBDA_MODE); its store is DynamoDB
# (JOTGATE_STORE=dynamodb://TABLE) or SQLite, and it reads secret settings given as Secrets
# Manager / SSM ARNs (feature aws-secrets). PostgreSQL (RDS) is left out of the package;
# JOTGATE_LAMBDA_FEATURES=dynamodb,aws-secrets,postgres puts it back.
#
#   scripts/lambda-zip.sh                                # bootstrap only
#   scripts/lambda-zip.sh --policy deploy/aws/policy.toml  # + policy.toml for the authorizer
#                                                        #   (JOTGATE_POLICY=/var/task/policy.toml)
set -euo pipefail
cd "$(dirname "$0")/.."
policy=""
if [ "${1:-}" = --policy ]; then
  policy=${2:?--policy needs a file}
  [ -f "$policy" ] || { echo "lambda-zip.sh: no such policy file: $policy" >&2; exit 2; }
elif [ $# -gt 0 ]; then
  echo "usage: scripts/lambda-zip.sh [--policy FILE]" >&2; exit 2
fi
cargo build --profile lambda --locked -p jotgate --no-default-features \
  --features "${JOTGATE_LAMBDA_FEATURES:-dynamodb,aws-secrets}"
cp target/lambda/jotgate target/lambda/bootstrap
POLICY="$policy" python3 - <<'PY'
import os, zipfile
def entry(name, mode):
    info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
    info.external_attr = mode << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info
with zipfile.ZipFile("target/lambda/jotgate.zip", "w") as z:
    with open("target/lambda/bootstrap", "rb") as f:
        z.writestr(entry("bootstrap", 0o100755), f.read(), compresslevel=9)  # executable
    if os.environ["POLICY"]:
        with open(os.environ["POLICY"], "rb") as f:
            z.writestr(entry("policy.toml", 0o100644), f.read(), compresslevel=9)
print(f"target/lambda/jotgate.zip: {os.path.getsize('target/lambda/jotgate.zip') / 2**20:.1f} MiB "
      f"(bootstrap {os.path.getsize('target/lambda/bootstrap') / 2**20:.1f} MiB)")
PY
# provided.al2023 has glibc 2.34: the binary must not need a newer one.
need=$(objdump -T target/lambda/bootstrap | grep -o 'GLIBC_[0-9.]*' | sort -V | tail -1)
echo "newest glibc symbol needed: $need (provided.al2023 has GLIBC_2.34)"

#!/usr/bin/env bash
# Released SQL scripts never change: a database that ran one must be able to trust that
# the next update script starts from exactly what it left. sql/released.sha256 holds
# the checksum of every released script (the install script of 0.1.0 and each update
# script); this fails if one differs, is missing, or if a script in sql/ is in neither
# that list nor the version being developed (Cargo.toml's, whose update script is
# added to the list when the version is released).
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
(cd sql && sha256sum --quiet -c released.sha256)
status=0
for f in sql/koe5*--*.sql; do
    name=${f#sql/}
    if ! grep -q "  $name\$" sql/released.sha256 && [[ $name != *"--$version.sql" ]]; then
        echo "$f is neither released (sql/released.sha256) nor the update to $version" >&2
        status=1
    fi
done
exit $status

#!/usr/bin/env bash
# Build the documentation site (mkdocs.yml, docs/) with warnings as errors, into site/ (or the folder given).
# Installs the project into .venv first if needed (scripts/setup.sh), then its `docs` extra if MkDocs is missing.
#   bash scripts/docs.sh            # → site/
#   bash scripts/docs.sh /tmp/site  # → another folder
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! .venv/bin/python -c "import mkdocs, material, pymdownx" 2>/dev/null; then
    echo "installing the docs extra" >&2
    .venv/bin/python -m pip install --quiet -e ".[test,docs]"
fi
NO_MKDOCS_2_WARNING=1 exec .venv/bin/python -m mkdocs build --strict --clean --site-dir "${1:-site}"

# checkov pass with every optional resource switched on (deploy/scripts/tf-check.sh)
enable_postgres  = true
tracker_replicas = 2

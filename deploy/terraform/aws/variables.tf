# ---------------------------------------------------------------- general

variable "region" {
  description = "AWS region to deploy into."
  type        = string
  default     = "eu-west-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "region must look like eu-west-1."
  }
}

variable "name" {
  description = "Name of the deployment: prefix of the VPC, the EKS cluster, the ECR repositories (<name>/shoal-<service>) and the database."
  type        = string
  default     = "shoal"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,18}[a-z0-9]$", var.name))
    error_message = "name must be 3-20 lowercase letters, digits or '-', starting with a letter."
  }
}

variable "tags" {
  description = "Extra tags for every AWS resource."
  type        = map(string)
  default     = {}
}

# ---------------------------------------------------------------- network

variable "vpc_cidr" {
  description = "CIDR block of the VPC; it is split into public, private and database subnets per availability zone."
  type        = string
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && tonumber(split("/", var.vpc_cidr)[1]) <= 18
    error_message = "vpc_cidr must be a valid IPv4 CIDR block of /18 or larger."
  }
}

variable "availability_zones" {
  description = "Availability zone names to use (2-6). Empty: the first az_count zones of the region (<region>a, b, c, ...)."
  type        = list(string)
  default     = []

  validation {
    condition     = length(var.availability_zones) == 0 || (length(var.availability_zones) >= 2 && length(var.availability_zones) <= 6 && length(distinct(var.availability_zones)) == length(var.availability_zones))
    error_message = "availability_zones must be empty or list 2 to 6 distinct zone names."
  }
}

variable "az_count" {
  description = "Number of availability zones when availability_zones is empty (one managed node group and one zone of peers each)."
  type        = number
  default     = 3

  validation {
    condition     = var.az_count >= 2 && var.az_count <= 6 && floor(var.az_count) == var.az_count
    error_message = "az_count must be an integer from 2 to 6."
  }
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all zones (cheaper, not zone-redundant) instead of one per zone."
  type        = bool
  default     = false
}

variable "enable_vpc_flow_logs" {
  description = "Send VPC flow logs to CloudWatch Logs."
  type        = bool
  default     = true
}

# ---------------------------------------------------------------- EKS

variable "kubernetes_version" {
  description = "EKS Kubernetes version (major.minor)."
  type        = string
  default     = "1.33"

  validation {
    condition     = can(regex("^1\\.(29|[3-9][0-9])$", var.kubernetes_version))
    error_message = "kubernetes_version must be 1.29 or newer, as major.minor (e.g. 1.33)."
  }
}

variable "endpoint_public_access" {
  description = "Expose the EKS API endpoint publicly (restricted to endpoint_public_access_cidrs). The private endpoint is always on."
  type        = bool
  default     = true
}

variable "endpoint_public_access_cidrs" {
  description = "CIDR blocks allowed to reach the public EKS API endpoint. Narrow this to your office/VPN ranges."
  type        = list(string)
  default     = ["0.0.0.0/0"]

  validation {
    condition     = length(var.endpoint_public_access_cidrs) > 0 && alltrue([for c in var.endpoint_public_access_cidrs : can(cidrhost(c, 0))])
    error_message = "endpoint_public_access_cidrs must be a non-empty list of IPv4 CIDR blocks."
  }
}

variable "node_instance_types" {
  description = "EC2 instance types of the managed node groups (first available is used)."
  type        = list(string)
  default     = ["m6i.large", "m5.large"]

  validation {
    condition     = length(var.node_instance_types) > 0
    error_message = "node_instance_types must not be empty."
  }
}

variable "node_capacity_type" {
  description = "ON_DEMAND or SPOT capacity for the node groups. Peers hold data: prefer ON_DEMAND."
  type        = string
  default     = "ON_DEMAND"

  validation {
    condition     = contains(["ON_DEMAND", "SPOT"], var.node_capacity_type)
    error_message = "node_capacity_type must be ON_DEMAND or SPOT."
  }
}

variable "nodes_per_az" {
  description = "Size of each zone's managed node group: min, desired and max nodes."
  type = object({
    min     = number
    desired = number
    max     = number
  })
  default = { min = 1, desired = 2, max = 4 }

  validation {
    condition     = var.nodes_per_az.min >= 0 && var.nodes_per_az.min <= var.nodes_per_az.desired && var.nodes_per_az.desired <= var.nodes_per_az.max && var.nodes_per_az.max >= 1
    error_message = "nodes_per_az must satisfy 0 <= min <= desired <= max and max >= 1."
  }
}

variable "node_disk_size_gb" {
  description = "Root volume size of every node in GiB (images and logs; shoal data lives on PVCs)."
  type        = number
  default     = 50

  validation {
    condition     = var.node_disk_size_gb >= 20 && var.node_disk_size_gb <= 1000
    error_message = "node_disk_size_gb must be between 20 and 1000."
  }
}

# ---------------------------------------------------------------- images

variable "image_tag" {
  description = "Tag of the shoal images in ECR (tags are immutable: push a new tag per release)."
  type        = string
  default     = "0.1.0"

  validation {
    condition     = can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.image_tag)) && var.image_tag != "latest"
    error_message = "image_tag must be a valid Docker tag other than 'latest' (ECR tags are immutable)."
  }
}

variable "ecr_force_delete" {
  description = "Allow `terraform destroy` to delete ECR repositories that still contain images."
  type        = bool
  default     = false
}

variable "ecr_keep_images" {
  description = "Number of tagged images kept per ECR repository (older ones expire)."
  type        = number
  default     = 50

  validation {
    condition     = var.ecr_keep_images >= 1
    error_message = "ecr_keep_images must be at least 1."
  }
}

# ---------------------------------------------------------------- the chart

variable "install_chart" {
  description = "Install the shoal Helm chart. Off for the first apply (the images are not in ECR yet); push them (make deploy-images), then apply again with true."
  type        = bool
  default     = false
}

variable "namespace" {
  description = "Kubernetes namespace of the shoal release."
  type        = string
  default     = "shoal"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", var.namespace)) && length(var.namespace) <= 63
    error_message = "namespace must be a valid Kubernetes namespace name."
  }
}

variable "release_name" {
  description = "Helm release name."
  type        = string
  default     = "shoal"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", var.release_name)) && length(var.release_name) <= 40
    error_message = "release_name must be a DNS label of at most 40 characters."
  }
}

variable "peers_per_az" {
  description = "Peers per availability zone (peer replicas = number of zones * peers_per_az)."
  type        = number
  default     = 2

  validation {
    condition     = var.peers_per_az >= 1 && floor(var.peers_per_az) == var.peers_per_az
    error_message = "peers_per_az must be a positive integer."
  }
}

variable "replication_factor" {
  description = "Copies kept of every chunk (SHOAL_REPLICATION__FACTOR); at most the number of peers."
  type        = number
  default     = 3

  validation {
    condition     = var.replication_factor >= 1 && var.replication_factor <= 16 && var.replication_factor <= (length(var.availability_zones) > 0 ? length(var.availability_zones) : var.az_count) * var.peers_per_az
    error_message = "replication_factor must be between 1 and 16 and at most (number of zones) * peers_per_az."
  }
}

variable "peer_volume_size" {
  description = "Size of each peer's data volume (Kubernetes quantity)."
  type        = string
  default     = "200Gi"

  validation {
    condition     = can(regex("^[0-9]+(Gi|Ti)$", var.peer_volume_size))
    error_message = "peer_volume_size must be a quantity in Gi or Ti, e.g. 200Gi."
  }
}

variable "tracker_replicas" {
  description = "Tracker replicas; more than 1 needs enable_postgres (shared store)."
  type        = number
  default     = 1

  validation {
    condition     = var.tracker_replicas >= 1 && (var.tracker_replicas == 1 || var.enable_postgres)
    error_message = "tracker_replicas must be at least 1, and more than 1 requires enable_postgres = true."
  }
}

variable "auth_enabled" {
  description = "Require tokens between services and from clients (generated by the chart, kept across upgrades)."
  type        = bool
  default     = true
}

variable "ui_exposure" {
  description = "How the web UI and the webserver gRPC port are exposed: none (port-forward only), internal (internal NLB, reachable from the VPC) or internet-facing (public NLB limited to ui_allowed_cidrs)."
  type        = string
  default     = "internal"

  validation {
    condition     = contains(["none", "internal", "internet-facing"], var.ui_exposure)
    error_message = "ui_exposure must be none, internal or internet-facing."
  }
}

variable "ui_allowed_cidrs" {
  description = "Client CIDR blocks allowed through the UI load balancer (ui_exposure internet-facing or internal)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.ui_allowed_cidrs : can(cidrhost(c, 0))])
    error_message = "ui_allowed_cidrs must be IPv4 CIDR blocks."
  }

  validation {
    condition     = var.ui_exposure != "internet-facing" || length(var.ui_allowed_cidrs) > 0
    error_message = "ui_exposure = internet-facing needs ui_allowed_cidrs (use [\"0.0.0.0/0\"] to open it to everyone on purpose)."
  }
}

variable "otlp_endpoint" {
  description = "OTLP endpoint for traces (OTEL_EXPORTER_OTLP_ENDPOINT), e.g. http://otel-collector.observability:4317. Empty: none."
  type        = string
  default     = ""

  validation {
    condition     = var.otlp_endpoint == "" || can(regex("^https?://", var.otlp_endpoint))
    error_message = "otlp_endpoint must be empty or start with http:// or https://."
  }
}

variable "enable_service_monitor" {
  description = "Render ServiceMonitors (needs the Prometheus Operator CRDs in the cluster)."
  type        = bool
  default     = false
}

variable "chart_values" {
  description = "Extra Helm values (any structure), merged last; e.g. { webserver = { replicas = 3 } }."
  type        = any
  default     = {}
}

# ---------------------------------------------------------------- PostgreSQL

variable "enable_postgres" {
  description = "Create a Multi-AZ RDS PostgreSQL instance and use it as the tracker store (allows tracker_replicas > 1)."
  type        = bool
  default     = false
}

variable "postgres_engine_version" {
  description = "PostgreSQL major version (minor versions are upgraded automatically)."
  type        = string
  default     = "16"

  validation {
    condition     = can(regex("^1[4-9]$", var.postgres_engine_version))
    error_message = "postgres_engine_version must be a major version from 14 to 19."
  }
}

variable "postgres_instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.t4g.medium"

  validation {
    condition     = startswith(var.postgres_instance_class, "db.")
    error_message = "postgres_instance_class must be an RDS class such as db.t4g.medium."
  }
}

variable "postgres_allocated_storage" {
  description = "Initial storage in GiB (grows automatically up to 4x)."
  type        = number
  default     = 50

  validation {
    condition     = var.postgres_allocated_storage >= 20 && var.postgres_allocated_storage <= 16384
    error_message = "postgres_allocated_storage must be between 20 and 16384 GiB."
  }
}

variable "postgres_backup_retention_days" {
  description = "Days of automated RDS backups."
  type        = number
  default     = 14

  validation {
    condition     = var.postgres_backup_retention_days >= 1 && var.postgres_backup_retention_days <= 35
    error_message = "postgres_backup_retention_days must be between 1 and 35."
  }
}

variable "postgres_deletion_protection" {
  description = "Protect the database from deletion (turn off before `terraform destroy`)."
  type        = bool
  default     = true
}

# ---------------------------------------------------------------- backups

variable "enable_catalogue_backup" {
  description = "With the embedded tracker store (enable_postgres = false): an S3 bucket (versioned, KMS-encrypted, private) and an IRSA role, and the chart's backup CronJob uploading catalogue snapshots to it."
  type        = bool
  default     = true
}

variable "backup_retention_days" {
  description = "Days a catalogue snapshot (and each older version of it) is kept in the backup bucket."
  type        = number
  default     = 30

  validation {
    condition     = var.backup_retention_days >= 1 && var.backup_retention_days <= 3650 && floor(var.backup_retention_days) == var.backup_retention_days
    error_message = "backup_retention_days must be a whole number of days between 1 and 3650."
  }
}

# The zones are pinned by name, so the set never changes behind our back (a
# new or impaired zone would otherwise reshuffle the subnets).
data "aws_availability_zones" "selected" {
  filter {
    name   = "zone-name"
    values = local.requested_azs
  }

  lifecycle {
    postcondition {
      condition     = length(self.names) == length(local.requested_azs)
      error_message = "Not all of ${join(", ", local.requested_azs)} exist in ${var.region}: set availability_zones explicitly."
    }
  }
}

data "aws_caller_identity" "current" {}

locals {
  requested_azs = (
    length(var.availability_zones) > 0
    ? var.availability_zones
    : [for suffix in slice(["a", "b", "c", "d", "e", "f"], 0, var.az_count) : "${var.region}${suffix}"]
  )
  azs = sort(data.aws_availability_zones.selected.names)

  # /16 -> per zone: private /20 (nodes and pods), public /24, database /24.
  private_subnets  = [for i, _ in local.azs : cidrsubnet(var.vpc_cidr, 4, i)]
  public_subnets   = [for i, _ in local.azs : cidrsubnet(var.vpc_cidr, 8, 160 + i)]
  database_subnets = [for i, _ in local.azs : cidrsubnet(var.vpc_cidr, 8, 176 + i)]

  # ECR registry for the chart: images are <registry>/shoal-<service>:<tag>.
  ecr_registry = "${data.aws_caller_identity.current.account_id}.dkr.ecr.${var.region}.amazonaws.com/${var.name}"
  services     = toset(["tracker", "peer", "webserver"])

  tags = merge(
    {
      Project   = "shoal"
      Name      = var.name
      ManagedBy = "terraform"
    },
    var.tags,
  )
}

# ---------------------------------------------------------------------- VPC

module "vpc" {
  #checkov:skip=CKV_TF_1:Registry module pinned to an exact version (6.6.0 = git tag v6.6.0, commit 82d1929e669efef4e2ad00611b8a68e7a56e049c); the registry form keeps `terraform init` upgrades reviewable.
  source  = "terraform-aws-modules/vpc/aws"
  version = "6.6.0"

  name = var.name
  cidr = var.vpc_cidr
  azs  = local.azs

  private_subnets  = local.private_subnets
  public_subnets   = local.public_subnets
  database_subnets = local.database_subnets

  create_database_subnet_group = true

  enable_nat_gateway     = true
  single_nat_gateway     = var.single_nat_gateway
  one_nat_gateway_per_az = !var.single_nat_gateway

  enable_dns_hostnames = true
  enable_dns_support   = true

  # Load balancers: public ones in public subnets, internal ones in private subnets.
  public_subnet_tags = {
    "kubernetes.io/role/elb" = 1
  }
  private_subnet_tags = {
    "kubernetes.io/role/internal-elb" = 1
  }

  enable_flow_log                                 = var.enable_vpc_flow_logs
  create_flow_log_cloudwatch_log_group            = var.enable_vpc_flow_logs
  create_flow_log_cloudwatch_iam_role             = var.enable_vpc_flow_logs
  flow_log_max_aggregation_interval               = 60
  flow_log_cloudwatch_log_group_retention_in_days = 90
}

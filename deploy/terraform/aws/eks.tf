# ---------------------------------------------------------------------- EKS

module "eks" {
  #checkov:skip=CKV_TF_1:Registry module pinned to an exact version (21.19.0 = git tag v21.19.0, commit bef29c4d9523523e57fe898643fde2895106b339); the registry form keeps `terraform init` upgrades reviewable.
  source  = "terraform-aws-modules/eks/aws"
  version = "21.19.0"

  name               = var.name
  kubernetes_version = var.kubernetes_version

  vpc_id     = module.vpc.vpc_id
  subnet_ids = module.vpc.private_subnets

  endpoint_private_access      = true
  endpoint_public_access       = var.endpoint_public_access
  endpoint_public_access_cidrs = var.endpoint_public_access_cidrs

  # The OIDC provider for IRSA: the backup job's role (backup.tf).
  enable_irsa = true

  # The identity running Terraform administers the cluster (access entry).
  enable_cluster_creator_admin_permissions = true

  addons = {
    coredns    = {}
    kube-proxy = {}
    eks-pod-identity-agent = {
      before_compute = true
    }
    vpc-cni = {
      before_compute = true
      # Enforce the chart's NetworkPolicies.
      configuration_values = jsonencode({ enableNetworkPolicy = "true" })
    }
    # PVCs of the tracker and the peers.
    aws-ebs-csi-driver = {
      pod_identity_association = [{
        role_arn        = aws_iam_role.ebs_csi.arn
        service_account = "ebs-csi-controller-sa"
      }]
    }
  }

  # One managed node group per availability zone, so that the cluster
  # autoscaler (or a person) can grow the zone whose EBS volumes need nodes.
  eks_managed_node_groups = {
    for idx, az in local.azs : az => {
      name = "${var.name}-${az}"
      # The module's default role name is "<name>-eks-node-group", and IAM name
      # prefixes end at 38 characters: a 20-character name and a 15-character zone
      # would not fit. "<name>-node-<index>-" fits for every allowed name.
      iam_role_name  = "${var.name}-node-${idx}"
      subnet_ids     = [module.vpc.private_subnets[idx]]
      ami_type       = "AL2023_x86_64_STANDARD"
      instance_types = var.node_instance_types
      capacity_type  = var.node_capacity_type

      min_size     = var.nodes_per_az.min
      desired_size = var.nodes_per_az.desired
      max_size     = var.nodes_per_az.max

      labels = {
        "shoal.io/node-group" = az
      }

      block_device_mappings = {
        xvda = {
          device_name = "/dev/xvda"
          ebs = {
            volume_size           = var.node_disk_size_gb
            volume_type           = "gp3"
            encrypted             = true
            delete_on_termination = true
          }
        }
      }

      metadata_options = {
        http_endpoint               = "enabled"
        http_tokens                 = "required"
        http_put_response_hop_limit = 1
      }

      update_config = {
        max_unavailable = 1
      }
    }
  }
}

# EBS CSI driver controller role, bound through EKS Pod Identity.
data "aws_iam_policy_document" "ebs_csi_assume" {
  statement {
    sid     = "EksPodIdentity"
    actions = ["sts:AssumeRole", "sts:TagSession"]

    principals {
      type        = "Service"
      identifiers = ["pods.eks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "ebs_csi" {
  name_prefix        = "${var.name}-ebs-csi-"
  description        = "EBS CSI driver controller of EKS cluster ${var.name}"
  assume_role_policy = data.aws_iam_policy_document.ebs_csi_assume.json
}

resource "aws_iam_role_policy_attachment" "ebs_csi" {
  role       = aws_iam_role.ebs_csi.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy"
}

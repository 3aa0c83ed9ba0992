# ------------------------------------------------ shoal on the cluster
#
# The chart from this repository (helm/shoal), with the images from ECR.
# First apply (install_chart = false, the default): the cluster and ECR; push the
# images (make deploy-images REGISTRY=$(terraform output -raw ecr_registry)); then
# apply again with install_chart = true.

locals {
  chart_path   = "${path.module}/../../../helm/shoal"
  store_secret = "${var.release_name}-store"
  ui_lb        = var.ui_exposure != "none"
  # The chart's "shoal.fullname" (templates/_helpers.tpl): resource names start with it.
  fullname      = trimsuffix(substr(strcontains(var.release_name, "shoal") ? var.release_name : "${var.release_name}-shoal", 0, 40), "-")
  peer_replicas = length(local.azs) * var.peers_per_az
  lb_annotations = {
    "service.beta.kubernetes.io/aws-load-balancer-type"            = "nlb"
    "service.beta.kubernetes.io/aws-load-balancer-scheme"          = var.ui_exposure
    "service.beta.kubernetes.io/aws-load-balancer-internal"        = var.ui_exposure == "internal" ? "true" : "false"
    "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type" = "instance"
  }

  chart_values = {
    global = {
      image = {
        registry   = local.ecr_registry
        tag        = var.image_tag
        pullPolicy = "IfNotPresent"
      }
    }
    observability = {
      otlp = {
        endpoint           = var.otlp_endpoint
        resourceAttributes = { "cloud.provider" = "aws", "cloud.region" = var.region, "k8s.cluster.name" = var.name }
      }
      serviceMonitor = { enabled = var.enable_service_monitor }
    }
    auth = { enabled = var.auth_enabled }
    store = {
      url               = ""
      existingSecret    = var.enable_postgres ? local.store_secret : ""
      existingSecretKey = "url"
    }
    networkPolicy = {
      enabled = true
      # Tracker and peers: release pods and pods labelled <fullname>-client only (an
      # ipBlock of the VPC would admit every pod: VPC CNI pod IPs are VPC addresses).
      clients = []
      # Load-balancer traffic reaches the webserver from the VPC (NLB instance targets).
      webserverGrpcFrom = local.ui_lb ? [{ ipBlock = { cidr = var.vpc_cidr } }] : []
    }
    tracker = {
      replicas = var.tracker_replicas
      config   = { replicationFactor = var.replication_factor }
      persistence = {
        enabled      = true
        size         = "50Gi"
        storageClass = kubernetes_storage_class_v1.gp3.metadata[0].name
      }
    }
    peer = {
      replicas = local.peer_replicas
      zone     = { discovery = "initContainer" }
      topologySpread = {
        enabled = true
        zone    = { maxSkew = 1, whenUnsatisfiable = "DoNotSchedule" }
      }
      persistence = {
        enabled      = true
        size         = var.peer_volume_size
        storageClass = kubernetes_storage_class_v1.gp3.metadata[0].name
      }
    }
    # Catalogue snapshots to the backup bucket (backup.tf), hourly by the chart's schedule.
    backup = {
      enabled     = local.backup_enabled
      destination = "s3"
      s3 = {
        bucket   = local.backup_enabled ? aws_s3_bucket.backup[0].id : ""
        prefix   = local.backup_prefix
        region   = var.region
        sse      = "aws:kms"
        kmsKeyId = aws_kms_key.shoal.arn
      }
      serviceAccount = {
        create      = true
        annotations = local.backup_enabled ? { "eks.amazonaws.com/role-arn" = aws_iam_role.backup[0].arn } : {}
      }
    }
    webserver = {
      service = {
        type                     = local.ui_lb ? "LoadBalancer" : "ClusterIP"
        annotations              = local.ui_lb ? local.lb_annotations : {}
        loadBalancerSourceRanges = local.ui_lb ? var.ui_allowed_cidrs : []
      }
    }
  }
}

resource "kubernetes_namespace_v1" "shoal" {
  metadata {
    name = var.namespace
    labels = {
      "app.kubernetes.io/part-of" = "shoal"
    }
  }

  depends_on = [module.eks]
}

# gp3, encrypted, bound in the zone where the pod is scheduled. Retain: a
# deleted PVC leaves its volume (and the chunks on it) for manual recovery.
resource "kubernetes_storage_class_v1" "gp3" {
  metadata {
    name = "gp3"
  }

  storage_provisioner    = "ebs.csi.aws.com"
  reclaim_policy         = "Retain"
  volume_binding_mode    = "WaitForFirstConsumer"
  allow_volume_expansion = true

  parameters = {
    type      = "gp3"
    encrypted = "true"
    fsType    = "ext4"
  }

  depends_on = [module.eks]
}

# PostgreSQL URL for the tracker (SHOAL_STORE__URL_FILE).
resource "kubernetes_secret_v1" "store" {
  count = var.enable_postgres ? 1 : 0

  metadata {
    name      = local.store_secret
    namespace = kubernetes_namespace_v1.shoal.metadata[0].name
    labels = {
      "app.kubernetes.io/part-of"    = "shoal"
      "app.kubernetes.io/managed-by" = "terraform"
    }
  }

  type = "Opaque"
  data = {
    url = local.postgres_url
  }
}

resource "helm_release" "shoal" {
  count = var.install_chart ? 1 : 0

  name      = var.release_name
  namespace = kubernetes_namespace_v1.shoal.metadata[0].name
  chart     = local.chart_path

  values = [
    yamlencode(local.chart_values),
    yamlencode(var.chart_values),
  ]

  wait            = true
  timeout         = 900
  atomic          = false
  cleanup_on_fail = true
  max_history     = 10

  depends_on = [
    module.eks,
    kubernetes_secret_v1.store,
    aws_ecr_repository.shoal,
  ]
}

data "kubernetes_service_v1" "webserver" {
  count = var.install_chart && local.ui_lb ? 1 : 0

  metadata {
    name      = "${local.fullname}-webserver"
    namespace = kubernetes_namespace_v1.shoal.metadata[0].name
  }

  depends_on = [helm_release.shoal]
}

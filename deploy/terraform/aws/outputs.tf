output "cluster_name" {
  description = "Name of the EKS cluster."
  value       = module.eks.cluster_name
}

output "region" {
  description = "AWS region of the deployment."
  value       = var.region
}

output "kubeconfig_command" {
  description = "Command that adds the cluster to your kubeconfig."
  value       = "aws eks update-kubeconfig --region ${var.region} --name ${module.eks.cluster_name}"
}

output "ecr_registry" {
  description = "Value for REGISTRY (make deploy / deploy-images): images are <ecr_registry>/shoal-<service>:<tag>."
  value       = local.ecr_registry
}

output "ecr_repositories" {
  description = "ECR repository URLs per service."
  value       = { for k, r in aws_ecr_repository.shoal : k => r.repository_url }
}

output "namespace" {
  description = "Kubernetes namespace of the release."
  value       = var.namespace
}

output "ui_address" {
  description = "Where the web UI answers: the load balancer URL, or the port-forward command when it is not exposed."
  value = (
    length(data.kubernetes_service_v1.webserver) > 0
    ? format("http://%s:8080/", try(
      coalesce(
        data.kubernetes_service_v1.webserver[0].status[0].load_balancer[0].ingress[0].hostname,
        data.kubernetes_service_v1.webserver[0].status[0].load_balancer[0].ingress[0].ip,
      ),
      "<load balancer pending: kubectl -n ${var.namespace} get svc ${local.fullname}-webserver>",
    ))
    : "kubectl -n ${var.namespace} port-forward svc/${local.fullname}-webserver 8080:8080  # then http://localhost:8080/"
  )
}

output "webserver_grpc_address" {
  description = "gRPC address of the webserver for external clients (empty when not exposed)."
  value = (
    length(data.kubernetes_service_v1.webserver) > 0
    ? try(format("%s:50051", coalesce(
      data.kubernetes_service_v1.webserver[0].status[0].load_balancer[0].ingress[0].hostname,
      data.kubernetes_service_v1.webserver[0].status[0].load_balancer[0].ingress[0].ip,
    )), "")
    : ""
  )
}

output "postgres_endpoint" {
  description = "RDS endpoint of the tracker store (empty without enable_postgres)."
  value       = var.enable_postgres ? aws_db_instance.postgres[0].endpoint : ""
}

output "backup_bucket" {
  description = "S3 bucket of the catalogue snapshots (empty with enable_postgres or without enable_catalogue_backup)."
  value       = local.backup_enabled ? aws_s3_bucket.backup[0].id : ""
}

output "backup_role_arn" {
  description = "IAM role the backup job's ServiceAccount assumes through IRSA (empty when there is no backup bucket)."
  value       = local.backup_enabled ? aws_iam_role.backup[0].arn : ""
}

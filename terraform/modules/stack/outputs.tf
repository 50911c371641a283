output "vpc_id" {
  description = "ID of the environment's VPC."
  value       = module.vpc.vpc_id
}

output "nat_gateway_public_ips" {
  description = "Egress IPs of the private subnets."
  value       = module.vpc.nat_gateway_public_ips
}

output "eks_cluster_name" {
  description = "EKS cluster name (aws eks update-kubeconfig --name <this> --region <region>)."
  value       = module.eks.cluster_name
}

output "eks_cluster_endpoint" {
  description = "Kubernetes API endpoint."
  value       = module.eks.cluster_endpoint
}

output "karpenter_node_role_name" {
  description = "IAM role of Karpenter's nodes (EC2NodeClass spec.role in k8s/cluster-addons/overlays/<env>)."
  value       = module.cluster_addons.karpenter_node_role_name
}

output "karpenter_interruption_queue_name" {
  description = "SQS interruption queue of Karpenter (settings.interruptionQueue in k8s/cluster-addons/overlays/<env>)."
  value       = module.cluster_addons.karpenter_interruption_queue_name
}

output "eks_managed_addons" {
  description = "EKS managed add-ons of the cluster besides vpc-cni, coredns and kube-proxy."
  value       = module.cluster_addons.managed_addons
}

output "service_role_arn" {
  description = "IRSA role for the todo-service ServiceAccount annotation eks.amazonaws.com/role-arn."
  value       = module.eks.service_role_arn
}

output "service_secret_name" {
  description = "Secrets Manager secret with the service's runtime secrets (set its value out of band)."
  value       = module.eks.service_secret_name
}

output "pods_security_group_id" {
  description = "Security group for the SecurityGroupPolicy of the todo-service pods."
  value       = module.security_groups.pods_security_group_id
}

output "alb_security_group_id" {
  description = "Security group for the Ingress annotation alb.ingress.kubernetes.io/security-groups."
  value       = module.security_groups.alb_security_group_id
}

output "db_endpoint" {
  description = "PostgreSQL writer endpoint (host:port); connect with sslmode=verify-full."
  value       = module.rds.endpoint
}

output "db_instance_identifier" {
  description = "RDS instance identifier (source for point-in-time restore, docs/recovery.md)."
  value       = module.rds.instance_identifier
}

output "db_master_user_secret_arn" {
  description = "Secrets Manager secret of the RDS master user (managed by RDS; operators only)."
  value       = module.rds.master_user_secret_arn
}

output "db_parameter_group_name" {
  description = "DB parameter group to reuse when restoring."
  value       = module.rds.parameter_group_name
}

output "db_subnet_group_name" {
  description = "DB subnet group to reuse when restoring."
  value       = module.rds.subnet_group_name
}

output "ecr_repository_url" {
  description = "Where CI pushes the todo-service image."
  value       = module.ecr.repository_url
}

output "alarm_topic_arn" {
  description = "SNS topic of the CloudWatch alarms."
  value       = module.observability.alarm_topic_arn
}

provider "aws" {
  region = var.aws_region

  # Only apply to the intended account: a wrong AWS profile fails at plan time.
  allowed_account_ids = var.allowed_account_ids

  default_tags {
    tags = {
      Project     = "todo-service"
      Environment = local.environment
      ManagedBy   = "terraform"
      Repository  = var.repository
      Owner       = var.owner
    }
  }
}

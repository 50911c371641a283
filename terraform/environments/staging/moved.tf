# The modules were called from this root until they moved into modules/stack; these blocks
# move an existing state to the new addresses (module.X -> module.stack.module.X) in place
# instead of destroying and re-creating the environment. Keep them while any state may still
# have the old addresses.

moved {
  from = module.observability
  to   = module.stack.module.observability
}

moved {
  from = module.vpc
  to   = module.stack.module.vpc
}

moved {
  from = module.security_groups
  to   = module.stack.module.security_groups
}

moved {
  from = module.rds
  to   = module.stack.module.rds
}

moved {
  from = module.eks
  to   = module.stack.module.eks
}

moved {
  from = module.ecr
  to   = module.stack.module.ecr
}

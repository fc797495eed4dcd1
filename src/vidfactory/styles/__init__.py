"""LoRA styles: a tenant's adapters checked against their base model, stored in the tenant's space, and
resolved for the jobs that name them."""

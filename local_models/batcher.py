from local_models.engine import LocalEngine as DynamicBatcher

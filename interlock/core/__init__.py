"""The decision core: model, policy engine, context, risk signals and the PDP."""

"""The verbs, one module each: evaluate, predict, finetune, export, bench, convert (pull/push/cache
live in zoo.hub). Each resolves a model through zoo.loading, validates its options
against its own and the task's declared options, and talks to the model only through its task."""

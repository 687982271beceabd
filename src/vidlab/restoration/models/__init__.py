"""The restoration models, one module per family: each registers its classes in
:data:`vidlab.restoration.nets.MODELS`, which imports every module of this package when a model is first
looked up. A new module here is ``model=<its name>`` with nothing else to edit."""

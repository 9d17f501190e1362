"""sftmix trainer plugin: Mixup-regularized SFT of a target model from a confidence table.

Not built yet: the loss, paired sampler and Trainer integration are tracked as their own work item.
It will read profiles only through :func:`profiler.open_table`.
"""

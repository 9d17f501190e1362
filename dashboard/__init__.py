"""sftmix dashboard: a Streamlit app over a confidence table.

Not built yet: tracked as its own work item. It will read profiles only through :func:`profiler.open_table`.
"""

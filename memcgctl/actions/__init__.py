"""Actions that change the system: killing processes and subtrees, creating and joining
a memcg for ``run``, writing pod badness for ``kube``.  Behind small interfaces with
fakes."""

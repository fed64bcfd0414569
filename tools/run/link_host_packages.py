"""Make the host's packages (torch, numpy) importable in an asv environment.

asv runs this with the environment's python as the first build command. It
writes a .pth file naming ESTIMATORS_HOST_SITE_PACKAGES (set by tools/run/asv_project.py)
into the environment's site-packages, so the environments never install torch
(a CUDA build is several GB; GPU hosts have no package index). Standard
library only: it runs before anything else is installed.
"""

import os
import sys
import sysconfig

site = os.environ.get("ESTIMATORS_HOST_SITE_PACKAGES")
if not site or not os.path.isdir(os.path.join(site, "torch")):
    sys.exit(
        f"ESTIMATORS_HOST_SITE_PACKAGES={site!r} does not hold torch: run asv through "
        "`python -m tools.run.asv_project ...`, which sets it to the site-packages of the python running it"
    )
target = os.path.join(sysconfig.get_paths()["purelib"], "estimators_host_packages.pth")
with open(target, "w") as stream:
    stream.write(site + "\n")

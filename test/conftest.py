"""Set-up shared by every test file of a pytest run.

* Each pytest process gets its own ROS domain (random, unless ``ROS_DOMAIN_ID`` is set by
  ``COSARAD_TEST_DOMAIN``) and discovery limited to this machine, so parallel test runs do not
  hear each other and nothing leaves loopback.
* ``test/`` is put on ``sys.path`` so tests can ``import ros_utils``.
"""
import os
import random
import sys

os.environ["ROS_DOMAIN_ID"] = os.environ.get("COSARAD_TEST_DOMAIN", str(random.SystemRandom().randint(1, 100)))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, os.path.dirname(__file__))

# Source this file (bash) to use the built cosarad_ros: venv, ROS 2 wheels, colcon install.
_cosarad_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export AMENT_PREFIX_PATH="$_cosarad_root/.venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export COLCON_TRACE="${COLCON_TRACE:-}"
# shellcheck disable=SC1091
source "$_cosarad_root/.venv/bin/activate"
# shellcheck disable=SC1091
source "$_cosarad_root/.ws/install/setup.bash"
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-42}"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
unset _cosarad_root

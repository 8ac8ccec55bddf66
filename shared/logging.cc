#include "shared/logging.h"

#include "spdlog/sinks/stdout_color_sinks.h"

namespace pkgdist {

void InitLogging(const std::string& level) {
  auto logger = spdlog::stderr_color_mt("pkgdist");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %^%l%$ %v", spdlog::pattern_time_type::utc);
  spdlog::set_level(spdlog::level::from_str(level));
}

}  // namespace pkgdist

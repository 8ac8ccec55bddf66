#include "shared/logging.h"

#include <grpc/support/log.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/sinks/stdout_sinks.h"

namespace pkgdist {
namespace {

thread_local const LogFields* current_fields = nullptr;

const LogFields& NoFields() {
  static const LogFields* none = new LogFields();
  return *none;
}

// The length of the valid UTF-8 sequence at the start of `s`, or 0.
size_t Utf8SequenceLength(absl::string_view s) {
  auto b = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  auto cont = [&](size_t i, unsigned char lo = 0x80, unsigned char hi = 0xBF) {
    return i < s.size() && b(i) >= lo && b(i) <= hi;
  };
  unsigned char c = b(0);
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    // No overlong forms (E0 80..9F) and no surrogates (ED A0..BF).
    unsigned char lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    return cont(1, lo, hi) && cont(2) ? 3 : 0;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    // No overlong forms (F0 80..8F) and nothing above U+10FFFF (F4 90..).
    unsigned char lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    return cont(1, lo, hi) && cont(2) && cont(3) ? 4 : 0;
  }
  return 0;
}

void AppendField(const char* key, const std::string& value, std::string* out) {
  if (value.empty()) return;
  out->append(",\"").append(key).append("\":");
  AppendJsonString(value, out);
}

void AppendRfc3339(std::chrono::system_clock::time_point time, std::string* out) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(time.time_since_epoch()).count();
  int64_t secs = ms / 1000, frac = ms % 1000;
  if (frac < 0) {  // before 1970: floor, not truncate
    --secs;
    frac += 1000;
  }
  std::time_t t = static_cast<std::time_t>(secs);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[40];
  size_t n = std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof(buf) - n, ".%03dZ", static_cast<int>(frac));
  out->append(buf);
}

class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    spdlog::string_view_t level = spdlog::level::to_string_view(msg.level);
    std::string line = FormatJsonLogLine(msg.time, absl::string_view(level.data(), level.size()),
                                         absl::string_view(msg.payload.data(), msg.payload.size()),
                                         CurrentLogFields());
    dest.append(line.data(), line.data() + line.size());
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>();
  }
};

// The logger gRPC's lines go to: never destroyed, because gRPC's threads
// may still log while static destructors run at exit.
std::shared_ptr<spdlog::logger>* grpc_logger = nullptr;

// gRPC's own lines (gpr_log), e.g. a failed handshake, as spdlog records.
void GrpcLogToSpdlog(gpr_log_func_args* args) {
  spdlog::level::level_enum level = spdlog::level::debug;
  if (args->severity == GPR_LOG_SEVERITY_ERROR) level = spdlog::level::err;
  if (args->severity == GPR_LOG_SEVERITY_INFO) level = spdlog::level::info;
  const char* file = args->file != nullptr ? args->file : "?";
  if (const char* slash = std::strrchr(file, '/')) file = slash + 1;
  (*grpc_logger)->log(level, "grpc {}:{}: {}", file, args->line,
                      args->message != nullptr ? args->message : "");
}

}  // namespace

void InitLogging(const std::string& level, const std::string& format) {
  if (format == "json") {
    // No colour codes: a collector reads these lines.
    auto logger = spdlog::stderr_logger_mt("pkgdist");
    logger->set_formatter(MakeJsonLogFormatter());
    spdlog::set_default_logger(logger);
    grpc_logger = new std::shared_ptr<spdlog::logger>(logger);
    gpr_set_log_function(GrpcLogToSpdlog);
  } else {
    auto logger = spdlog::stderr_color_mt("pkgdist");
    spdlog::set_default_logger(logger);
    spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %^%l%$ %v", spdlog::pattern_time_type::utc);
  }
  spdlog::set_level(spdlog::level::from_str(level));
}

ScopedLogFields::ScopedLogFields(LogFields fields)
    : fields_(std::move(fields)), previous_(current_fields) {
  if (previous_ != nullptr) {
    if (fields_.job.empty()) fields_.job = previous_->job;
    if (fields_.agent.empty()) fields_.agent = previous_->agent;
    if (fields_.package.empty()) fields_.package = previous_->package;
  }
  current_fields = &fields_;
}

ScopedLogFields::~ScopedLogFields() { current_fields = previous_; }

void ScopedLogFields::Set(const LogFields& fields) {
  if (!fields.job.empty()) fields_.job = fields.job;
  if (!fields.agent.empty()) fields_.agent = fields.agent;
  if (!fields.package.empty()) fields_.package = fields.package;
}

const LogFields& CurrentLogFields() {
  return current_fields != nullptr ? *current_fields : NoFields();
}

std::unique_ptr<spdlog::formatter> MakeJsonLogFormatter() {
  return std::make_unique<JsonFormatter>();
}

void AppendJsonString(absl::string_view s, std::string* out) {
  static constexpr char kHex[] = "0123456789abcdef";
  out->push_back('"');
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = Utf8SequenceLength(s.substr(i));
    if (n == 0) {
      out->append("\\ufffd");  // not UTF-8: one replacement per bad byte
      ++i;
      continue;
    }
    if (n > 1) {
      out->append(s.data() + i, n);
    } else if (c == '"' || c == '\\') {
      out->push_back('\\');
      out->push_back(static_cast<char>(c));
    } else if (c == '\n') {
      out->append("\\n");
    } else if (c == '\r') {
      out->append("\\r");
    } else if (c == '\t') {
      out->append("\\t");
    } else if (c < 0x20 || c == 0x7f) {
      out->append("\\u00");
      out->push_back(kHex[c >> 4]);
      out->push_back(kHex[c & 0xf]);
    } else {
      out->push_back(static_cast<char>(c));
    }
    i += n;
  }
  out->push_back('"');
}

std::string FormatJsonLogLine(std::chrono::system_clock::time_point time,
                              absl::string_view level, absl::string_view message,
                              const LogFields& fields) {
  std::string out;
  out.reserve(64 + message.size() + fields.job.size() + fields.agent.size() +
              fields.package.size());
  out.append("{\"time\":\"");
  AppendRfc3339(time, &out);
  out.append("\",\"level\":");
  AppendJsonString(level, &out);
  out.append(",\"message\":");
  AppendJsonString(message, &out);
  AppendField("job", fields.job, &out);
  AppendField("agent", fields.agent, &out);
  AppendField("package", fields.package, &out);
  out.append("}\n");
  return out;
}

}  // namespace pkgdist

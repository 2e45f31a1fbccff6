// Runtime::stats_json(): the statistics as JSON, one spelling of every key
// for the preload library's stats= file and hmmctl.
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <uhmm/runtime.hpp>

namespace uhmm {

std::string Runtime::stats_json() const {
    const RuntimeStats s = stats();
    nlohmann::json j;
    j["version"] = std::string(version());
    j["pid"] = ::getpid();
    j["policy"] = std::string(to_string(policy().kind));
    j["faults"] = s.faults;
    j["faults_missing"] = s.faults_missing;
    j["faults_wp"] = s.faults_wp;
    j["fault_p50_ns"] = s.fault_p50_ns;
    j["fault_p99_ns"] = s.fault_p99_ns;
    j["first_touch_faults"] = s.first_touch_faults;
    j["device_faults"] = s.device_faults;
    j["write_waits"] = s.write_waits;
    j["watched_writes"] = s.watched_writes;
    j["pages_zero_filled"] = s.pages_zero_filled;
    j["pages_to_device"] = s.pages_to_device;
    j["pages_to_host"] = s.pages_to_host;
    j["pages_to_host_on_fault"] = s.pages_to_host_on_fault;
    j["pages_discarded"] = s.pages_discarded;
    j["migrate_failed_pages"] = s.migrate_failed_pages;
    j["migrations"] = s.policy_migrations;
    j["policy_rounds"] = s.policy_rounds;
    j["migrations_would_block"] = s.migrations_would_block;
    j["bytes_to_device"] = s.bytes_to_device;
    j["bytes_to_host"] = s.bytes_to_host;
    j["copy_batches"] = s.copy_batches;
    j["prefetches"] = s.prefetches;
    j["replicas"] = s.replicas;
    j["replicas_made"] = s.replicas_made;
    j["replica_invalidations"] = s.replica_invalidations;
    j["ranges"] = s.ranges;
    j["ranges_managed"] = s.ranges_managed;
    j["managed_bytes"] = s.managed_bytes;
    j["metadata_bytes"] = s.metadata_bytes;
    j["device_pages"] = s.device_pages;
    j["arena_limit_bytes"] = s.arena.limit_pages * 4096;
    j["arena_used_bytes"] = s.arena.used_pages * 4096;
    j["arena_high_water_bytes"] = s.arena.high_water_pages * 4096;
    return j.dump();
}

}  // namespace uhmm

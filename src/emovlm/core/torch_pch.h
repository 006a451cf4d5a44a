// Precompiled header for the torch-using targets: the heavy, stable includes only.
#pragma once
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/orchestrator/actor_machine.h"

#include <gtest/gtest.h>

TEST(ActorMachine, Placeholder) {}

"""The controller runtime: work queue, informers, leader election, workers."""

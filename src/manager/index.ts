/** The model manager (SPEC §4): several models together, selective unload, eviction, lost devices. */
export { ModelManager, devicesOf, type ManagerOptions, type ManagedLoadOptions, type ManagedModelInfo } from './manager.ts';
export { ManagerCapacityError, ModelUnusableError, UnknownManagedModelError } from './errors.ts';
export { allocationWithout } from './replan.ts';

import type { WeightSet } from './weights.ts';

export type ComponentKind = 'diffusion_model' | 'vae' | 'text_encoder';

interface PrefixRule {
  readonly pattern: RegExp;
  readonly kind: ComponentKind;
}

/**
 * How ComfyUI's single-file checkpoints name their parts. A component is named after its
 * prefix without the trailing dot ("first_stage_model", "conditioner.embedders.1",
 * "text_encoders.clip_l"), so the names match what ComfyUI users see in their files.
 */
export const COMFYUI_PREFIXES: readonly PrefixRule[] = Object.freeze([
  { pattern: /^(model\.diffusion_model)\./, kind: 'diffusion_model' },
  { pattern: /^(first_stage_model)\./, kind: 'vae' },
  { pattern: /^(cond_stage_model)\./, kind: 'text_encoder' },
  { pattern: /^(conditioner\.embedders\.\d+)\./, kind: 'text_encoder' },
  { pattern: /^(text_encoders\.[^.]+)\./, kind: 'text_encoder' },
]);

export interface CheckpointComponent {
  readonly name: string;
  readonly kind: ComponentKind;
  /** The component's tensors with the prefix removed: usable as a model of its own. */
  readonly weights: WeightSet;
}

function componentOf(tensorName: string): { name: string; kind: ComponentKind } | null {
  for (const rule of COMFYUI_PREFIXES) {
    const m = rule.pattern.exec(tensorName);
    if (m) return { name: m[1]!, kind: rule.kind };
  }
  return null;
}

export function isComfyCheckpoint(weights: WeightSet): boolean {
  for (const name of weights.tensors.keys()) if (componentOf(name)) return true;
  return false;
}

/**
 * Splits a ComfyUI checkpoint into its components, in the order they first appear. Tensors
 * under no known prefix (EMA copies, schedules) belong to no component. The components share
 * the checkpoint's open file: close the checkpoint, not them.
 */
export function splitComfyCheckpoint(weights: WeightSet): Map<string, CheckpointComponent> {
  const components = new Map<string, CheckpointComponent>();
  for (const tensorName of weights.tensors.keys()) {
    const found = componentOf(tensorName);
    if (!found || components.has(found.name)) continue;
    const prefix = `${found.name}.`;
    const view = weights.view(`${weights.name}#${found.name}`, (key) => (key.startsWith(prefix) ? key.slice(prefix.length) : null), null);
    components.set(found.name, { name: found.name, kind: found.kind, weights: view });
  }
  return components;
}

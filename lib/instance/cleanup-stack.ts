/**
 * Undo steps registered as resources are acquired and run in reverse order, once, on whichever
 * path ends the instance first (spawn failure, exit, stop, agent shutdown). The shape is
 * firecracker-containerd's per-process cleanup stack.
 */
import type { Logger } from 'pino';

interface CleanupStep {
  name: string;
  run: () => void | Promise<void>;
}

export class CleanupStack {
  private readonly steps: CleanupStep[] = [];
  private unwinding: Promise<Error[]> | undefined;

  push(name: string, run: () => void | Promise<void>): void {
    if (this.unwinding) {
      throw new Error(`cleanup step '${name}' registered after the stack was unwound`);
    }
    this.steps.push({ name, run });
  }

  get size(): number {
    return this.steps.length;
  }

  /**
   * Runs every step, newest first. A failing step is logged and collected, never stops the
   * others. Concurrent and repeated calls share the one unwind.
   */
  unwind(logger?: Logger): Promise<Error[]> {
    this.unwinding ??= this.runSteps(logger);
    return this.unwinding;
  }

  private async runSteps(logger: Logger | undefined): Promise<Error[]> {
    const errors: Error[] = [];
    for (let step = this.steps.pop(); step; step = this.steps.pop()) {
      try {
        await step.run();
      } catch (caught) {
        const error = caught instanceof Error ? caught : new Error(String(caught));
        error.message = `cleanup '${step.name}': ${error.message}`;
        logger?.warn({ err: error, step: step.name }, 'cleanup step failed');
        errors.push(error);
      }
    }
    return errors;
  }
}

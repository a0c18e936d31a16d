/**
 * The assertions our tests use, behind one module so that swapping
 * `node:assert/strict` for `@std/assert` later is a one-file change.
 *
 * @module
 */

import nodeAssert from "node:assert/strict";

/** Asserts that `value` is truthy. */
export function assert(value: unknown, message?: string): asserts value {
  nodeAssert.ok(value, message);
}

/** Asserts that `actual` and `expected` are deeply and strictly equal. */
export function assertEquals<T>(
  actual: unknown,
  expected: T,
  message?: string,
): asserts actual is T {
  nodeAssert.deepStrictEqual(actual, expected, message);
}

/** Asserts that `actual` and `expected` are not deeply and strictly equal. */
export function assertNotEquals(actual: unknown, expected: unknown, message?: string): void {
  nodeAssert.notDeepStrictEqual(actual, expected, message);
}

/** Asserts that `actual` is strictly (`Object.is`) equal to `expected`. */
export function assertStrictEquals<T>(
  actual: unknown,
  expected: T,
  message?: string,
): asserts actual is T {
  nodeAssert.strictEqual(actual, expected, message);
}

/** Asserts that `actual` is an instance of `expectedType`. */
export function assertInstanceOf<T>(
  actual: unknown,
  // deno-lint-ignore no-explicit-any
  expectedType: abstract new (...args: any[]) => T,
  message?: string,
): asserts actual is T {
  nodeAssert.ok(
    actual instanceof expectedType,
    message ?? `Expected an instance of ${expectedType.name}, got ${String(actual)}`,
  );
}

/** Asserts that `actual` contains `expected` as a substring. */
export function assertStringIncludes(actual: string, expected: string, message?: string): void {
  nodeAssert.ok(
    actual.includes(expected),
    message ?? `Expected ${JSON.stringify(actual)} to include ${JSON.stringify(expected)}`,
  );
}

/** Asserts that `actual` matches `expected`. */
export function assertMatch(actual: string, expected: RegExp, message?: string): void {
  nodeAssert.match(actual, expected, message);
}

/** Fails the test with `message`. */
export function fail(message?: string): never {
  nodeAssert.fail(message);
}

// deno-lint-ignore no-explicit-any
type ErrorClass<E extends Error> = abstract new (...args: any[]) => E;

/**
 * Asserts that `fn` throws an error of class `errorClass` (if given) whose
 * message includes `msgIncludes` (if given); returns the error.
 */
export function assertThrows<E extends Error = Error>(
  fn: () => unknown,
  errorClass?: ErrorClass<E>,
  msgIncludes?: string,
): E {
  try {
    fn();
  } catch (error) {
    return checkError(error, errorClass, msgIncludes);
  }
  nodeAssert.fail("Expected the function to throw");
}

/**
 * Asserts that `fn` returns a promise that rejects with an error of class
 * `errorClass` (if given) whose message includes `msgIncludes` (if given);
 * resolves to the error.
 */
export async function assertRejects<E extends Error = Error>(
  fn: () => PromiseLike<unknown>,
  errorClass?: ErrorClass<E>,
  msgIncludes?: string,
): Promise<E> {
  try {
    await fn();
  } catch (error) {
    return checkError(error, errorClass, msgIncludes);
  }
  nodeAssert.fail("Expected the promise to reject");
}

function checkError<E extends Error>(
  error: unknown,
  errorClass: ErrorClass<E> | undefined,
  msgIncludes: string | undefined,
): E {
  if (!(error instanceof Error)) nodeAssert.fail(`Expected an Error, got ${String(error)}`);
  if (errorClass !== undefined && !(error instanceof errorClass)) {
    nodeAssert.fail(`Expected ${errorClass.name}, got ${error.name}: ${error.message}`);
  }
  if (msgIncludes !== undefined && !error.message.includes(msgIncludes)) {
    nodeAssert.fail(
      `Expected the message to include ${JSON.stringify(msgIncludes)}, got ${
        JSON.stringify(error.message)
      }`,
    );
  }
  return error as E;
}
